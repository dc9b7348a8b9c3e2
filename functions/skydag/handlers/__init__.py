"""The Lambda handlers: thin Powertools wrappers around the service layer.

- ``dag_loader.lambda_handler``: S3 Object Created/Deleted (EventBridge) → DAG versions
  and their schedules;
- ``scheduler.lambda_handler``: SQS batches of EventBridge events → ``route_event``;
- ``stream_processor.lambda_handler``: DynamoDB Streams of runs and task instances;
- ``reconciler.lambda_handler``: the periodic repair pass.

See docs/handlers.md for what each consumes, retries and drops, and the metrics.
"""
