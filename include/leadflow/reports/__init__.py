"""The hourly interaction reports: window, extract (MongoDB), transforms (pandas), load (Sheets)."""
