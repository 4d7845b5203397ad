"""WhatsApp follow-ups: SQS events in, personalised WhatsApp messages out, each at most once.

* :mod:`.contract`     the SQS message contract (pydantic), raw or EventBridge envelope;
* :mod:`.ledger`       ``followup_deliveries``, the per-event state machine behind at-most-once;
* :mod:`.personalise`  OpenAI text with output validation and a deterministic fallback;
* :mod:`.whatsapp`     the Cloud API client and the transient/permanent error classification;
* :mod:`.processor`    one batch, concurrently, under a global rate limit and per-user pacing;
* :mod:`.sensor`       the SQS sensor that keeps message bodies out of XCom;
* :mod:`.tasks`        the task bodies of the ``whatsapp_followups`` DAG;
* :mod:`.dag_settings` tunables and the visibility-timeout arithmetic.
"""
