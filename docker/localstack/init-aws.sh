#!/usr/bin/env bash
# LocalStack "ready" hook (mounted into /etc/localstack/init/ready.d/): creates leadflow's AWS
# resources from the very definitions in deploy/ (mounted at /opt/leadflow-deploy), with the
# placeholders filled for LocalStack (account 000000000000), plus the alerts topic and the bucket
# for the object store with deploy/s3-lifecycle.json. Idempotent: LocalStack starts empty unless
# persistence is on, and every call below tolerates an existing resource.
set -euo pipefail
DEPLOY=/opt/leadflow-deploy
export REGION="${AWS_DEFAULT_REGION:-us-east-1}" ACCOUNT=000000000000
BUCKET="${LEADFLOW_BUCKET:-leadflow-local}"

# render FILE PATH... -> a CLI input file: the JSON at PATH (e.g. queues.0) with placeholders filled
render() {
  python3 - "$@" <<'PY'
import json, os, sys, tempfile
path, keys = sys.argv[1], sys.argv[2].split(".")
doc = json.load(open(path))
for key in keys:
    doc = doc[int(key)] if key.isdigit() else doc[key]
text = json.dumps(doc).replace("${Region}", os.environ["REGION"]).replace("${AccountId}", os.environ["ACCOUNT"])
fd, out = tempfile.mkstemp(suffix=".json")
os.write(fd, text.encode())
print(out)
PY
}

awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.0)" >/dev/null
awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.1)" >/dev/null
# Delivery receipts (whatsapp_statuses): DLQ first.
awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.2)" >/dev/null
awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.3)" >/dev/null
# Site-visit reminders (whatsapp_reminders): DLQ first.
awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.4)" >/dev/null
awslocal sqs create-queue --cli-input-json "file://$(render "$DEPLOY/sqs-queues.json" queues.5)" >/dev/null
awslocal events put-rule --cli-input-json "file://$(render "$DEPLOY/eventbridge-rule.json" rule)" >/dev/null
awslocal events put-targets --cli-input-json "file://$(render "$DEPLOY/eventbridge-rule.json" targets)" >/dev/null
awslocal sns create-topic --name leadflow-alerts >/dev/null
awslocal s3api create-bucket --bucket "$BUCKET" >/dev/null 2>&1 || true
awslocal s3api put-bucket-lifecycle-configuration --bucket "$BUCKET" \
  --lifecycle-configuration "file://$DEPLOY/s3-lifecycle.json"
echo "leadflow: queues, EventBridge rule, alerts topic and s3://$BUCKET ready"
