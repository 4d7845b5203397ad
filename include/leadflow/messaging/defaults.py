"""The SQS batch sensor's defaults, shared by both continuous DAGs (their ``dag_settings`` name them)."""

MAX_WAIT_SECONDS = 600  # a run waits this long for its first message, then ends skipped
# Once a run has messages, further receives in the same poke wait only 1 s: an empty answer then
# means the backlog is drained and processing should start. (Not 0: a short poll samples only
# some SQS servers and can come back empty while messages are waiting.)
DRAIN_WAIT_SECONDS = 1
# The deferral's hard timeout, a backstop behind the trigger's own deadline.
TIMEOUT_GRACE_SECONDS = 120
