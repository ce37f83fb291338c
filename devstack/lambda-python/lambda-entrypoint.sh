#!/bin/sh
# Same contract as the entrypoint of AWS's Lambda base images: the handler is
# the only argument; outside Lambda (no AWS_LAMBDA_RUNTIME_API) the Runtime
# Interface Emulator serves the invoke API on port 8080.
if [ $# -ne 1 ]; then
  echo "lambda-entrypoint.sh: expected exactly one argument, the handler (e.g. app.handler)" >&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie /usr/bin/python3 -m awslambdaric "$_HANDLER"
fi
exec /usr/bin/python3 -m awslambdaric "$_HANDLER"
