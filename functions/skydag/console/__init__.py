"""The web console (`skydag ui`): a local page server over the tables the CLI reads.

It runs on the person's machine with their own AWS credentials (IAM is the access
control), reads through the CLI's read layer (``skydag.cli``) and acts by sending the
command events the CLI sends, so the scheduler stays the only writer. ``views`` turns
records into what the pages show, ``actions`` maps forms onto the CLI's commands, ``app``
holds the Starlette routes; templates and the small script are package data (no build step,
nothing fetched at run time).
"""
