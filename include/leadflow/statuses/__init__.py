"""WhatsApp delivery receipts: Meta's ``statuses`` webhooks, from SQS into the delivery ledger."""
