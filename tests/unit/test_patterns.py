"""EventBridge event-pattern matcher: tables of cases from AWS's documentation.

Sources for the cases (each group says which):

* "Creating Amazon EventBridge event patterns", "Matching null values and empty strings",
  "Arrays in Amazon EventBridge event patterns" and "Content filtering in Amazon
  EventBridge event patterns" (the awsdocs/amazon-eventbridge-user-guide sources and
  the current comparison-operator table);
* the README of aws/event-ruler, the matching library behind EventBridge;
* cases marked "validated" reproduce event/pattern pairs that LocalStack's test-suite
  recorded against real EventBridge (``TestEventPattern``), for behaviour the docs leave
  implicit (null values, missing fields, non-string values under string operators).
"""

from __future__ import annotations

from typing import Any

import pytest

from skydag.signals.patterns import PatternError, matches, validate_pattern

# The sample event of the event-ruler README, used by the documentation's examples.
RULER_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "012345679012",
    "time": "2017-10-02T16:24:49Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "instance-id": "i-000000aaaaaa00000",
        "state": "running",
    },
}

# "Creating event patterns": the EC2 termination event and the pattern selecting it.
EC2_TERMINATED: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}
EC2_TERMINATION_PATTERN: dict[str, Any] = {
    "source": ["aws.ec2"],
    "detail-type": ["EC2 Instance State-change Notification"],
    "detail": {"state": ["terminated"]},
}

# "Matching null values and empty strings": the Auto Scaling event.
AUTOSCALING_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
    "detail-type": "EC2 Instance Launch Successful",
    "source": "aws.autoscaling",
    "account": "123456789012",
    "time": "2015-11-11T21:31:47Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {"eventVersion": "", "responseElements": None},
}

# "Value matching": the (truncated) Macie alert.
MACIE_EVENT: dict[str, Any] = {
    "detail-type": "Macie Alert",
    "source": "aws.macie",
    "detail": {
        "notification-type": "ALERT_CREATED",
        "tags": ["Custom_Alert", "Insider"],
        "risk-score": 80,
        "trigger": {"alert-type": "basic", "risk": 8},
    },
}
MACIE_PATTERN: dict[str, Any] = {
    "source": ["aws.macie"],
    "detail-type": ["Macie Alert"],
    "detail": {"risk-score": [80], "trigger": {"risk": [8]}},
}

# "Arrays in event patterns".
RESOURCES_PATTERN: dict[str, Any] = {
    "resources": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f",
    ]
}
ASG_ARN = (
    "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:"
    "eb56d16b-bbf0-401d-b893-d5978ed4a025:autoScalingGroupName/ASGTerminate"
)

# event-ruler README, "JSON Array Matching".
EMPLOYEES: dict[str, Any] = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}

# "Numeric matching" and "Complex example with multiple matching".
NUMERIC_PATTERN: dict[str, Any] = {
    "detail": {
        "c-count": [{"numeric": [">", 0, "<=", 5]}],
        "d-count": [{"numeric": ["<", 10]}],
        "x-limit": [{"numeric": ["=", 3.018e2]}],
    }
}
COMPLEX_PATTERN: dict[str, Any] = {
    "time": [{"prefix": "2017-10-02"}],
    "detail": {
        "state": [{"anything-but": "initializing"}],
        "c-count": [{"numeric": [">", 0, "<=", 5]}],
        "d-count": [{"numeric": ["<", 10]}],
        "x-limit": [{"anything-but": [100, 200, 300]}],
        "source-ip": [{"cidr": "10.0.0.0/8"}],
    },
}

# "Exists matching": the event without detail.state (c-count is an object, not a leaf).
NO_STATE_EVENT: dict[str, Any] = {
    "detail-type": ["EC2 Instance State-change Notification"],
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-02ebd4584a2ebd341"],
    "detail": {"c-count": {"c1": 100}},
}

# "$or" examples (content filtering docs / event-ruler README).
CLOUDWATCH_OR: dict[str, Any] = {
    "source": ["aws.cloudwatch"],
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {"namespace": ["AWS/EC2", "AWS/ES"]},
    ],
}
DETAIL_OR: dict[str, Any] = {
    "detail": {
        "$or": [
            {"c-count": [{"numeric": [">", 0, "<=", 5]}]},
            {"d-count": [{"numeric": ["<", 10]}]},
            {"x-limit": [{"numeric": ["=", 3.018e2]}]},
        ]
    }
}
PARALLEL_OR: dict[str, Any] = {
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {"namespace": ["AWS/EC2", "AWS/ES"]},
    ],
    "detail": {
        "$or": [
            {"source": ["aws.cloudwatch"]},
            {"detail-type": ["CloudWatch Alarm State Change"]},
        ]
    },
}
NESTED_OR: dict[str, Any] = {
    "source": ["aws.cloudwatch"],
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {
            "metricType": ["MetricType"],
            "namespace": ["AWS/EC2", "AWS/ES"],
            "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
        },
        {"scope": ["Service"]},
    ],
}


def detail(fields: dict[str, Any]) -> dict[str, Any]:
    """A minimal custom event carrying ``fields`` as its detail."""
    return {"source": "test-source", "detail-type": "test-detail-type", "detail": fields}


def on(field: str, *conditions: Any) -> dict[str, Any]:
    """A pattern putting ``conditions`` on ``detail.<field>``."""
    return {"detail": {field: list(conditions)}}


def with_detail(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with some ``detail`` fields replaced (``_`` in names becomes ``-``)."""
    fields = {**base["detail"], **{k.replace("_", "-"): v for k, v in changes.items()}}
    return {**base, "detail": fields}


MATCH_CASES = [
    # --- exact matching: "Creating event patterns" ---------------------------------------
    pytest.param(EC2_TERMINATION_PATTERN, EC2_TERMINATED, True, id="docs-ec2-termination"),
    pytest.param(
        EC2_TERMINATION_PATTERN,
        with_detail(EC2_TERMINATED, state="running"),
        False,
        id="docs-ec2-termination-other-state",
    ),
    pytest.param(
        {"source": ["aws.ec2", "aws.fargate"]},
        {"source": "aws.fargate"},
        True,
        id="docs-multiple-values-or",
    ),
    pytest.param(
        {"source": ["aws.ec2", "aws.fargate"]}, {"source": "aws.s3"}, False, id="no-value-in-list"
    ),
    pytest.param(
        {"source": ["aws.ec2"], "region": ["us-west-1"]},
        {"source": "aws.ec2"},
        False,
        id="every-pattern-field-must-exist",
    ),
    pytest.param(
        {"detail": {"state": ["terminated"]}},
        {"state": "terminated"},
        False,
        id="same-nesting-structure-required",
    ),
    pytest.param(
        {"source": ["aws.ec2"], "region": ["us-west-1"]},
        EC2_TERMINATED,
        True,
        id="fields-anded-others-ignored",
    ),
    pytest.param({"source": ["aws.ec2"]}, {"source": "AWS.EC2"}, False, id="exact-case-sensitive"),
    pytest.param(MACIE_PATTERN, MACIE_EVENT, True, id="docs-macie-value-matching"),
    pytest.param(
        MACIE_PATTERN,
        {**MACIE_EVENT, "detail": {**MACIE_EVENT["detail"], "trigger": {"risk": 7}}},
        False,
        id="docs-macie-nested-mismatch",
    ),
    pytest.param(on("n", 5), detail({"n": 5.0}), True, id="number-5-matches-5.0"),
    pytest.param(on("n", 300), detail({"n": 3.0e2}), True, id="number-300-matches-3.0e2"),
    pytest.param(on("n", 5), detail({"n": "5"}), False, id="number-never-matches-string"),
    pytest.param(on("n", "5"), detail({"n": 5}), False, id="string-never-matches-number"),
    pytest.param(on("b", True), detail({"b": True}), True, id="boolean-true"),
    pytest.param(on("b", False), detail({"b": False}), True, id="boolean-false"),
    pytest.param(on("b", True), detail({"b": 1}), False, id="true-is-not-1"),
    pytest.param(on("n", 1), detail({"n": True}), False, id="1-is-not-true"),
    # --- null and empty string: "Matching null values and empty strings" ----------------
    pytest.param(
        {"detail": {"eventVersion": [""]}}, AUTOSCALING_EVENT, True, id="docs-empty-string"
    ),
    pytest.param({"detail": {"responseElements": [None]}}, AUTOSCALING_EVENT, True, id="docs-null"),
    pytest.param(
        {"detail": {"responseElements": [""]}},
        AUTOSCALING_EVENT,
        False,
        id="docs-empty-string-does-not-match-null",
    ),
    pytest.param(
        {"detail": {"eventVersion": [None]}},
        AUTOSCALING_EVENT,
        False,
        id="docs-null-does-not-match-empty-string",
    ),
    pytest.param(on("missing", None), detail({}), False, id="null-does-not-match-absent"),
    pytest.param(
        {"resources": [None]}, AUTOSCALING_EVENT, False, id="validated-null-vs-empty-array"
    ),
    # --- arrays: "Arrays in event patterns" / event-ruler README -------------------------
    pytest.param(
        RESOURCES_PATTERN,
        {"resources": [ASG_ARN, "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]},
        True,
        id="docs-array-intersection",
    ),
    pytest.param(RESOURCES_PATTERN, {"resources": [ASG_ARN]}, False, id="array-no-intersection"),
    pytest.param(
        {"detail": {"tags": [{"prefix": "Ins"}]}}, MACIE_EVENT, True, id="operator-on-event-array"
    ),
    pytest.param(
        {"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True, id="ruler-array-of-objects"
    ),
    pytest.param(
        {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}},
        EMPLOYEES,
        True,
        id="ruler-array-same-element",
    ),
    pytest.param(
        {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
        EMPLOYEES,
        False,
        id="ruler-array-consistent-matching",
    ),
    pytest.param(
        {"employees": {"firstName": ["Peter"]}},
        {"employees": [[EMPLOYEES["employees"][0]], [EMPLOYEES["employees"][2]]]},
        True,
        id="ruler-multi-level-arrays",
    ),
    # --- prefix / suffix ----------------------------------------------------------------
    pytest.param(
        {"time": [{"prefix": "2017-10-02"}]},
        {"time": "2017-10-02T18:43:48Z"},
        True,
        id="docs-prefix",
    ),
    pytest.param(
        {"time": [{"prefix": "2017-10-02"}]},
        {"time": "2017-10-03T18:43:48Z"},
        False,
        id="docs-prefix-no-match",
    ),
    pytest.param(
        {"source": ["aws.autoscaling"], "region": [{"prefix": "eu-"}]},
        {"source": "aws.autoscaling", "region": "eu-west-1"},
        True,
        id="docs-prefix-european-regions",
    ),
    pytest.param(
        {"source": ["aws.autoscaling"], "region": [{"prefix": "eu-"}]},
        {"source": "aws.autoscaling", "region": "us-east-1"},
        False,
        id="docs-prefix-european-regions-us",
    ),
    pytest.param(on("n", {"prefix": "12"}), detail({"n": 123}), False, id="prefix-strings-only"),
    pytest.param(
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail({"service": "eventbridge"}),
        True,
        id="docs-prefix-ignore-case-lower",
    ),
    pytest.param(
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail({"service": "EVENTBRIDGE"}),
        True,
        id="docs-prefix-ignore-case-upper",
    ),
    pytest.param(
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail({"service": "sns"}),
        False,
        id="docs-prefix-ignore-case-no-match",
    ),
    pytest.param(
        {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.png"}, True, id="docs-suffix"
    ),
    pytest.param(
        {"FileName": [{"suffix": ".png"}]},
        {"FileName": "image.PNG"},
        False,
        id="docs-suffix-case-sensitive",
    ),
    pytest.param(
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        detail({"FileName": "image.PNG"}),
        True,
        id="docs-suffix-ignore-case",
    ),
    pytest.param(
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        detail({"FileName": "image.jpg"}),
        False,
        id="docs-suffix-ignore-case-no-match",
    ),
    # --- equals-ignore-case ---------------------------------------------------------------
    pytest.param(
        {"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]},
        EC2_TERMINATED,
        True,
        id="docs-equals-ignore-case",
    ),
    pytest.param(
        {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True, id="docs-name-alice"
    ),
    pytest.param(
        {"Name": [{"equals-ignore-case": "alice"}]},
        {"Name": "alicia"},
        False,
        id="equals-ignore-case-is-not-prefix",
    ),
    pytest.param(
        on("value", {"equals-ignore-case": ""}),
        detail({"value": ""}),
        True,
        id="validated-equals-ignore-case-empty",
    ),
    # --- anything-but ---------------------------------------------------------------------
    pytest.param(
        on("state", {"anything-but": "initializing"}),
        with_detail(RULER_EVENT),
        True,
        id="docs-anything-but-string",
    ),
    pytest.param(
        on("state", {"anything-but": "initializing"}),
        detail({"state": "initializing"}),
        False,
        id="docs-anything-but-string-excluded",
    ),
    pytest.param(
        on("x-limit", {"anything-but": 123}),
        detail({"x-limit": 456}),
        True,
        id="docs-anything-but-number",
    ),
    pytest.param(
        on("x-limit", {"anything-but": 123}),
        detail({"x-limit": 123.0}),
        False,
        id="docs-anything-but-number-excluded",
    ),
    pytest.param(
        on("state", {"anything-but": ["stopped", "overloaded"]}),
        detail({"state": "overloaded"}),
        False,
        id="docs-anything-but-string-list",
    ),
    pytest.param(
        on("state", {"anything-but": ["stopped", "overloaded"]}),
        detail({"state": "running"}),
        True,
        id="docs-anything-but-string-list-other",
    ),
    pytest.param(
        on("x-limit", {"anything-but": [100, 200, 300]}),
        detail({"x-limit": 200}),
        False,
        id="docs-anything-but-number-list",
    ),
    pytest.param(
        on("x-limit", {"anything-but": [100, 200, 300]}),
        detail({"x-limit": 301.8}),
        True,
        id="docs-anything-but-number-list-other",
    ),
    pytest.param(
        on("state", {"anything-but": {"prefix": "init"}}),
        detail({"state": "initializing"}),
        False,
        id="docs-anything-but-prefix",
    ),
    pytest.param(
        on("state", {"anything-but": {"prefix": "init"}}),
        detail({"state": "running"}),
        True,
        id="docs-anything-but-prefix-other",
    ),
    pytest.param(
        on("state", {"anything-but": {"prefix": ["init", "test"]}}),
        detail({"state": "post-init"}),
        True,
        id="validated-anything-but-prefix-list",
    ),
    pytest.param(
        on("state", {"anything-but": {"prefix": ["init", "test"]}}),
        detail({"state": "testing"}),
        False,
        id="anything-but-prefix-list-excluded",
    ),
    pytest.param(
        on("FileName", {"anything-but": {"suffix": ".txt"}}),
        detail({"FileName": "notes.txt"}),
        False,
        id="docs-anything-but-suffix",
    ),
    pytest.param(
        on("FileName", {"anything-but": {"suffix": ".txt"}}),
        detail({"FileName": "image.png"}),
        True,
        id="docs-anything-but-suffix-other",
    ),
    pytest.param(
        on("state", {"anything-but": {"equals-ignore-case": "Stopped"}}),
        detail({"state": "STOPPED"}),
        False,
        id="docs-anything-but-ignore-case",
    ),
    pytest.param(
        on("state", {"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}),
        detail({"state": "overloaded"}),
        False,
        id="docs-anything-but-ignore-case-list",
    ),
    pytest.param(
        on("state", {"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}),
        detail({"state": "running"}),
        True,
        id="docs-anything-but-ignore-case-list-other",
    ),
    pytest.param(
        on("FilePath", {"anything-but": {"wildcard": "*/lib/*"}}),
        detail({"FilePath": "/usr/lib/python3"}),
        False,
        id="docs-anything-but-wildcard",
    ),
    pytest.param(
        on("FilePath", {"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}),
        detail({"FilePath": "/usr/share/doc"}),
        True,
        id="docs-anything-but-wildcard-list",
    ),
    pytest.param(
        on("FilePath", {"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}),
        detail({"FilePath": "/usr/bin/env"}),
        False,
        id="docs-anything-but-wildcard-list-excluded",
    ),
    pytest.param(
        on("state", {"anything-but": "initializing"}),
        detail({}),
        False,
        id="validated-anything-but-needs-the-field",
    ),
    pytest.param(
        on("state", {"anything-but": "initializing"}),
        detail({"state": None}),
        True,
        id="validated-anything-but-null",
    ),
    pytest.param(
        on("state", {"anything-but": {"equals-ignore-case": "initializing"}}),
        detail({"state": None}),
        True,
        id="validated-anything-but-ignore-case-null",
    ),
    pytest.param(
        on("state", {"anything-but": {"prefix": "init"}}),
        detail({"state": 12}),
        True,
        id="validated-anything-but-prefix-number",
    ),
    pytest.param(
        on("FilePath", {"anything-but": {"wildcard": "*/dir/*"}}),
        detail({"FilePath": 123}),
        True,
        id="validated-anything-but-wildcard-number",
    ),
    pytest.param(
        on("FilePath", {"anything-but": {"wildcard": ""}}),
        detail({"FilePath": "dir/init/file"}),
        True,
        id="validated-anything-but-empty-wildcard",
    ),
    pytest.param(
        on("x-limit", {"anything-but": 0}),
        detail({"x-limit": 789}),
        True,
        id="validated-anything-but-zero",
    ),
    pytest.param(
        on("id", {"anything-but": "123"}),
        detail({"id": 123}),
        True,
        id="anything-but-string-vs-number",
    ),
    pytest.param(
        on("interests", {"anything-but": {"wildcard": "*ball"}}),
        detail({"interests": ["baseball", "basketball"]}),
        False,
        id="anything-but-every-array-element-excluded",
    ),
    pytest.param(
        on("interests", {"anything-but": {"wildcard": "*ball"}}),
        detail({"interests": ["baseball", "hockey"]}),
        True,
        id="anything-but-one-array-element-allowed",
    ),
    pytest.param(
        on("state", {"anything-but": "x"}),
        detail({"state": []}),
        False,
        id="anything-but-empty-array-is-absent",
    ),
    # --- numeric --------------------------------------------------------------------------
    pytest.param(NUMERIC_PATTERN, RULER_EVENT, True, id="docs-numeric"),
    pytest.param(
        NUMERIC_PATTERN, with_detail(RULER_EVENT, c_count=0), False, id="docs-numeric-open-bottom"
    ),
    pytest.param(
        NUMERIC_PATTERN, with_detail(RULER_EVENT, c_count=5.5), False, id="docs-numeric-above-top"
    ),
    pytest.param(
        NUMERIC_PATTERN, with_detail(RULER_EVENT, d_count=10), False, id="docs-numeric-less-than"
    ),
    pytest.param(
        NUMERIC_PATTERN, with_detail(RULER_EVENT, x_limit=301), False, id="docs-numeric-equals"
    ),
    pytest.param(
        NUMERIC_PATTERN,
        with_detail(RULER_EVENT, c_count="5"),
        False,
        id="docs-numeric-json-numbers-only",
    ),
    pytest.param(
        on("c-count", {"numeric": [">", 0]}),
        detail({"c-count": True}),
        False,
        id="numeric-not-bool",
    ),
    pytest.param(
        on("Price", {"numeric": [">", 10, "<=", 20]}),
        detail({"Price": 20}),
        True,
        id="docs-price-range-top",
    ),
    pytest.param(
        on("Price", {"numeric": [">", 10, "<=", 20]}),
        detail({"Price": 10}),
        False,
        id="docs-price-range-bottom",
    ),
    pytest.param(
        on("Price", {"numeric": ["=", 100]}), detail({"Price": 100.0}), True, id="docs-price-100"
    ),
    pytest.param(
        on("n", {"numeric": [">=", 0, "<", 1]}), detail({"n": 0}), True, id="numeric-closed-bottom"
    ),
    pytest.param(
        on("n", {"numeric": ["<", 10]}),
        detail({"n": [50, 1]}),
        True,
        id="numeric-any-array-element",
    ),
    # --- IP address matching --------------------------------------------------------------
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        detail({"sourceIPAddress": "10.0.0.255"}),
        True,
        id="docs-cidr",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        detail({"sourceIPAddress": "10.0.1.1"}),
        False,
        id="docs-cidr-outside",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        detail({"sourceIPAddress": 123}),
        False,
        id="validated-cidr-number",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        detail({"sourceIPAddress": "not-an-ip"}),
        False,
        id="cidr-not-an-ip",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "2001:db8::/64"}]}},
        detail({"sourceIPAddress": "2001:db8::1"}),
        True,
        id="docs-cidr-ipv6",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "2001:db8::/64"}]}},
        detail({"sourceIPAddress": "2001:db9::1"}),
        False,
        id="docs-cidr-ipv6-outside",
    ),
    pytest.param(
        {"detail": {"sourceIPAddress": [{"cidr": "0.0.0.0/0"}]}},
        detail({"sourceIPAddress": "::1"}),
        False,
        id="cidr-ipv4-block-never-matches-ipv6",
    ),
    # --- exists ---------------------------------------------------------------------------
    pytest.param(
        on("state", {"exists": True}),
        {
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": "2015-11-11T21:29:54Z",
            "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
            "detail": {"instance-id": "i-abcd1111", "state": "pending"},
        },
        True,
        id="docs-exists-true",
    ),
    pytest.param(
        on("state", {"exists": True}), NO_STATE_EVENT, False, id="docs-exists-true-absent"
    ),
    pytest.param(
        on("c-count", {"exists": False}),
        {"detail": {"state": ["initializing", "running"]}},
        True,
        id="docs-exists-false",
    ),
    pytest.param(
        on("c-count", {"exists": False}), NO_STATE_EVENT, True, id="docs-exists-false-not-a-leaf"
    ),
    pytest.param(
        on("c-count", {"exists": True}), NO_STATE_EVENT, False, id="exists-true-object-not-a-leaf"
    ),
    pytest.param(
        on("c-count", {"exists": False}), RULER_EVENT, False, id="exists-false-field-present"
    ),
    pytest.param(on("v", {"exists": True}), detail({"v": None}), True, id="exists-null-is-a-value"),
    pytest.param(on("v", {"exists": True}), detail({"v": []}), False, id="exists-empty-array"),
    pytest.param(
        {"detail": {"level1": {"level2:": {"level3": {"level4": [{"exists": False}]}}}}},
        detail({"level1": {"level2": "l2 value"}}),
        True,
        id="validated-exists-false-deep-absent",
    ),
    pytest.param(
        {"detail": {"level1": {"level2": {"level3": {"level4": [{"exists": False}]}}}}},
        detail({"level1": {"level2": {"level3": {"level4": "l4 value"}}}}),
        False,
        id="validated-exists-false-deep-present",
    ),
    pytest.param(
        on("v", "a", {"exists": False}), detail({}), True, id="exists-false-ored-with-value-absent"
    ),
    pytest.param(
        on("v", "a", {"exists": False}),
        detail({"v": "b"}),
        False,
        id="exists-false-ored-with-value-other",
    ),
    # --- wildcard -------------------------------------------------------------------------
    pytest.param(
        {"FileName": [{"wildcard": "*.png"}]}, {"FileName": "a.png"}, True, id="docs-wildcard"
    ),
    pytest.param(
        {"FileName": [{"wildcard": "*.png"}]},
        {"FileName": "a.jpg"},
        False,
        id="docs-wildcard-no-match",
    ),
    pytest.param(
        {"FileName": [{"wildcard": "*.png"}]},
        {"FileName": ".png"},
        True,
        id="docs-wildcard-matches-zero-characters",
    ),
    pytest.param(
        {"FileName": [{"wildcard": "dir/*.png"}]},
        {"FileName": "dir/sub/a.png"},
        True,
        id="docs-wildcard-png-in-dir",
    ),
    pytest.param(
        {"FileName": [{"wildcard": "dir/*.png"}]},
        {"FileName": "other/a.png"},
        False,
        id="docs-wildcard-png-outside-dir",
    ),
    pytest.param(
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/default"},
        True,
        id="docs-wildcard-arn",
    ),
    pytest.param(
        {"title": [{"wildcard": "*Title*"}]}, {"title": "The Title Page"}, True, id="blog-wildcard"
    ),
    pytest.param(
        {"source": [{"wildcard": "Simple*Service"}]},
        {"source": "SimpleNotificationService"},
        True,
        id="ruler-wildcard",
    ),
    pytest.param(
        {"v": [{"wildcard": "a\\*b"}]}, {"v": "a*b"}, True, id="docs-wildcard-escaped-star"
    ),
    pytest.param(
        {"v": [{"wildcard": "a\\*b"}]},
        {"v": "axxb"},
        False,
        id="docs-wildcard-escaped-star-is-literal",
    ),
    pytest.param(
        {"v": [{"wildcard": "a\\\\*"}]},
        {"v": "a\\bc"},
        True,
        id="docs-wildcard-escaped-backslash",
    ),
    pytest.param({"v": [{"wildcard": "a.c*"}]}, {"v": "abcd"}, False, id="wildcard-dot-is-literal"),
    pytest.param({"v": [{"wildcard": "1*"}]}, {"v": 123}, False, id="wildcard-strings-only"),
    # --- $or ------------------------------------------------------------------------------
    pytest.param(
        CLOUDWATCH_OR,
        {"source": "aws.cloudwatch", "metricName": "CPUUtilization"},
        True,
        id="docs-or-first",
    ),
    pytest.param(
        CLOUDWATCH_OR,
        {"source": "aws.cloudwatch", "namespace": "AWS/EC2"},
        True,
        id="docs-or-second",
    ),
    pytest.param(
        CLOUDWATCH_OR,
        {"source": "aws.cloudwatch", "metricName": "Other", "namespace": "AWS/S3"},
        False,
        id="docs-or-neither",
    ),
    pytest.param(
        CLOUDWATCH_OR,
        {"source": "aws.ec2", "metricName": "CPUUtilization"},
        False,
        id="docs-or-anded-with-siblings",
    ),
    pytest.param(DETAIL_OR, detail({"c-count": 9, "d-count": 3}), True, id="docs-or-inside-detail"),
    pytest.param(
        DETAIL_OR,
        detail({"c-count": 9, "d-count": 30, "x-limit": 1}),
        False,
        id="docs-or-inside-detail-none",
    ),
    pytest.param(
        PARALLEL_OR,
        {"namespace": "AWS/ES", "detail": {"detail-type": "CloudWatch Alarm State Change"}},
        True,
        id="ruler-parallel-or",
    ),
    pytest.param(
        PARALLEL_OR,
        {"namespace": "AWS/ES", "detail": {"detail-type": "Other"}},
        False,
        id="ruler-parallel-or-second-fails",
    ),
    pytest.param(
        NESTED_OR,
        {
            "source": "aws.cloudwatch",
            "metricType": "MetricType",
            "namespace": "AWS/EC2",
            "spaceId": 1000,
        },
        True,
        id="ruler-nested-or",
    ),
    pytest.param(
        NESTED_OR,
        {
            "source": "aws.cloudwatch",
            "metricType": "MetricType",
            "namespace": "AWS/EC2",
            "spaceId": 1,
        },
        False,
        id="ruler-nested-or-inner-fails",
    ),
    pytest.param(
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        True,
        id="docs-or-location-or-day",
    ),
    pytest.param(
        {"detail": {"$or": [{"a": [{"exists": False}]}, {"b": ["x"]}]}},
        detail({"a": 1, "b": "y"}),
        False,
        id="or-with-exists",
    ),
    # --- combined: "Complex example with multiple matching" --------------------------------
    pytest.param(COMPLEX_PATTERN, RULER_EVENT, True, id="docs-complex-example"),
    pytest.param(
        COMPLEX_PATTERN,
        with_detail(RULER_EVENT, state="initializing"),
        False,
        id="docs-complex-example-anything-but-fails",
    ),
    pytest.param(
        COMPLEX_PATTERN,
        with_detail(RULER_EVENT, source_ip="192.168.0.1"),
        False,
        id="docs-complex-example-cidr-fails",
    ),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), MATCH_CASES)
def test_matches(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    validate_pattern(pattern)  # every documented pattern is one EventBridge accepts
    assert matches(pattern, event) is expected


INVALID_CASES = [
    # --- structure ------------------------------------------------------------------------
    pytest.param([], "(root)", id="root-not-an-object"),
    pytest.param("aws.ec2", "(root)", id="root-string"),
    pytest.param({}, "(root)", id="root-empty"),
    pytest.param({"source": "aws.ec2"}, "source: must be an object or an array", id="leaf-string"),
    pytest.param({"detail": {"n": 5}}, "detail.n: must be an object or an array", id="leaf-number"),
    pytest.param({"source": []}, "source: empty arrays are not allowed", id="empty-array"),
    pytest.param({"detail": {}}, "detail: empty objects are not allowed", id="empty-object"),
    pytest.param({"source": [["a"]]}, "source: match values", id="nested-array-value"),
    pytest.param({"n": [float("inf")]}, "n: match values", id="non-finite-number"),
    pytest.param({1: ["a"]}, "(root): field names must be strings", id="non-string-key"),
    # --- operators ------------------------------------------------------------------------
    pytest.param(
        {"detail": {"state": [{"prefx": "a"}]}},
        "detail.state: unknown operator 'prefx'",
        id="unknown-operator",
    ),
    pytest.param({"x": [{"Prefix": "a"}]}, "x: unknown operator", id="operators-case-sensitive"),
    pytest.param({"x": [{}]}, "x: a match expression needs an operator", id="empty-expression"),
    pytest.param(
        {"x": [{"prefix": "a", "suffix": "b"}]}, "x: only one operator", id="two-operators"
    ),
    pytest.param({"x": [{"prefix": 5}]}, "x: prefix needs a string", id="prefix-number"),
    pytest.param({"x": [{"suffix": None}]}, "x: suffix needs a string", id="suffix-null"),
    pytest.param(
        {"x": [{"prefix": {"wildcard": "a*"}}]},
        "x: prefix only supports a nested equals-ignore-case",
        id="prefix-nested-other",
    ),
    pytest.param(
        {"x": [{"suffix": {"equals-ignore-case": 5}}]},
        "x: suffix/equals-ignore-case needs a string",
        id="suffix-ignore-case-number",
    ),
    pytest.param(
        {"x": [{"equals-ignore-case": ["a", "b"]}]},
        "x: equals-ignore-case needs a string",
        id="validated-equals-ignore-case-list",
    ),
    pytest.param({"x": [{"exists": "true"}]}, "x: exists needs true or false", id="exists-string"),
    # --- wildcard -------------------------------------------------------------------------
    pytest.param(
        {"f": [{"wildcard": "a**b"}]}, "f: wildcard 'a**b': consecutive", id="wildcard-consecutive"
    ),
    pytest.param(
        {"f": [{"wildcard": "a\\b"}]}, "f: wildcard 'a\\\\b': invalid escape", id="wildcard-escape"
    ),
    pytest.param({"f": [{"wildcard": "a\\"}]}, "invalid escape", id="wildcard-trailing-backslash"),
    pytest.param({"f": [{"wildcard": 5}]}, "f: wildcard needs a string", id="wildcard-number"),
    # --- numeric --------------------------------------------------------------------------
    pytest.param(
        {"detail": {"price": [{"numeric": []}]}},
        "detail.price: numeric needs an operator and a number",
        id="numeric-empty",
    ),
    pytest.param(
        {"detail": {"price": [{"numeric": [">"]}]}},
        "detail.price: numeric needs an operator and a number",
        id="numeric-operator-only",
    ),
    pytest.param({"p": [{"numeric": 5}]}, "p: numeric needs", id="numeric-not-array"),
    pytest.param({"p": [{"numeric": [">", "5"]}]}, "p: numeric > needs a number", id="numeric-str"),
    pytest.param(
        {"p": [{"numeric": [">", True]}]}, "p: numeric > needs a number", id="numeric-bool"
    ),
    pytest.param(
        {"p": [{"numeric": ["!=", 5]}]}, "p: unknown numeric operator '!='", id="numeric-bad-op"
    ),
    pytest.param(
        {"p": [{"numeric": [">", 0, "<="]}]}, "p: numeric needs", id="numeric-incomplete-range"
    ),
    pytest.param(
        {"p": [{"numeric": ["<", 10, ">", 0]}]}, "p: a numeric range", id="numeric-range-reversed"
    ),
    pytest.param(
        {"p": [{"numeric": ["=", 1, "<", 5]}]}, "p: a numeric range", id="numeric-range-equals"
    ),
    pytest.param(
        {"p": [{"numeric": [">", 10, "<", 5]}]},
        "p: numeric range bottom 10 must be less than top 5",
        id="numeric-range-inverted",
    ),
    pytest.param(
        {"p": [{"numeric": [">=", 5, "<=", 5]}]}, "must be less than top", id="numeric-range-empty"
    ),
    pytest.param(
        {"p": [{"numeric": [">", 0, "<", 5, "<", 6]}]}, "p: too many terms", id="numeric-too-many"
    ),
    # --- cidr -----------------------------------------------------------------------------
    pytest.param(
        {"ip": [{"cidr": "bad-filter"}]}, "ip: cidr 'bad-filter': malformed", id="validated-cidr"
    ),
    pytest.param(
        {"ip": [{"cidr": "xx.11.xx/8"}]}, "invalid IP address", id="validated-cidr-bad-ip"
    ),
    pytest.param({"ip": [{"cidr": "bad-/64filter"}]}, "mask bits", id="validated-cidr-bad-mask"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/33"}]}, "mask bits must be < 32", id="cidr-mask-v4"),
    pytest.param({"ip": [{"cidr": "::/128"}]}, "mask bits must be < 128", id="cidr-mask-v6"),
    pytest.param({"ip": [{"cidr": 10}]}, "ip: cidr needs a string", id="cidr-number"),
    # --- anything-but ---------------------------------------------------------------------
    pytest.param({"s": [{"anything-but": None}]}, "s: anything-but needs", id="anything-but-null"),
    pytest.param({"s": [{"anything-but": True}]}, "s: anything-but needs", id="anything-but-bool"),
    pytest.param({"s": [{"anything-but": []}]}, "s: anything-but array", id="anything-but-empty"),
    pytest.param(
        {"s": [{"anything-but": ["a", 1]}]}, "all strings or all numbers", id="anything-but-mixed"
    ),
    pytest.param(
        {"s": [{"anything-but": [None]}]}, "all strings or all numbers", id="anything-but-list-null"
    ),
    pytest.param(
        {"s": [{"anything-but": {"prefix": ""}}]},
        "s: anything-but/prefix cannot be empty",
        id="validated-anything-but-empty-prefix",
    ),
    pytest.param(
        {"s": [{"anything-but": {"suffix": ""}}]},
        "anything-but/suffix cannot be empty",
        id="validated-anything-but-empty-suffix",
    ),
    pytest.param(
        {"s": [{"anything-but": {"prefix": 5}}]},
        "anything-but/prefix needs a string",
        id="validated-anything-but-prefix-number",
    ),
    pytest.param(
        {"s": [{"anything-but": {"equals-ignore-case": [1]}}]},
        "anything-but/equals-ignore-case needs a string",
        id="validated-anything-but-ignore-case-number",
    ),
    pytest.param(
        {"s": [{"anything-but": {"numeric": [">", 1]}}]},
        "s: unsupported anything-but operator 'numeric'",
        id="anything-but-numeric",
    ),
    pytest.param(
        {"s": [{"anything-but": {"prefix": "a", "suffix": "b"}}]},
        "exactly one nested operator",
        id="anything-but-two-nested",
    ),
    pytest.param(
        {"s": [{"anything-but": {"wildcard": "a**"}}]},
        "consecutive wildcard",
        id="anything-but-wildcard-consecutive",
    ),
    # --- $or ------------------------------------------------------------------------------
    pytest.param({"$or": {"a": ["b"]}}, "$or: $or must be an array", id="or-object"),
    pytest.param({"$or": [{"a": ["b"]}]}, "$or: $or needs at least 2", id="or-one-alternative"),
    pytest.param(
        {"$or": [{"a": ["b"]}, "c"]}, "$or[1]: only objects are allowed", id="or-non-object"
    ),
    pytest.param(
        {"$or": [{"a": ["b"]}, {}]}, "$or[1]: empty objects are not allowed", id="or-empty-object"
    ),
    pytest.param(
        {"detail": {"$or": [{"a": ["b"]}, {"prefix": ["c"]}]}},
        "detail.$or[1].prefix: 'prefix' is a reserved keyword",
        id="or-reserved-field-name",
    ),
    pytest.param(
        {"detail": {"$or": [{"a": ["b"]}, {"c": [{"nope": 1}]}]}},
        "detail.$or[1].c: unknown operator 'nope'",
        id="or-alternative-validated",
    ),
    pytest.param(
        {"$or": [{"a": ["b"]}, {"c": {"d": "e"}}]},
        "$or[1].c.d: must be an object or an array",
        id="or-nested-path",
    ),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID_CASES)
def test_invalid_patterns(pattern: Any, message: str) -> None:
    with pytest.raises(PatternError) as raised:
        validate_pattern(pattern)
    assert message in str(raised.value)


def test_pattern_error_is_a_value_error() -> None:
    """Pydantic's AfterValidator turns ValueError into a validation error for DAG files."""
    assert issubclass(PatternError, ValueError)


def test_matching_does_not_raise_on_unvalidated_patterns() -> None:
    pattern: dict[str, Any] = {
        "a": [{"nope": 1}, {"wildcard": "x**"}, {"cidr": "bad"}, {"numeric": [">"]}],
        "b": "scalar",
    }
    assert matches(pattern, {"a": "x", "b": "scalar"}) is False


def test_matches_does_not_mutate_inputs() -> None:
    pattern = {"detail": {"state": [{"anything-but": ["a", "b"]}]}}
    event = {"detail": {"state": ["c", "d"]}}
    before = (repr(pattern), repr(event))
    assert matches(pattern, event) is True
    assert (repr(pattern), repr(event)) == before
