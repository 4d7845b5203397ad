"""What the follow-ups and the receipts share: the SQS batch sensor, trigger and batch store, the
queue actions and redrive, the delivery ledger, and the WhatsApp client with its template
configuration. Neither :mod:`leadflow.followups` nor :mod:`leadflow.statuses` imports the other;
both import this."""
