"""JSON logs: one object per line with extra fields, whatever their key types."""

import logging

import orjson

from journeywatch.shared.logs import JsonFormatter


def test_json_line_carries_extra_fields_with_int_keys() -> None:
    record = logging.makeLogRecord(
        {
            "name": "jw",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "restored",
            "offsets": {0: 12, 3: 7},
        }
    )
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "restored"
    assert entry["level"] == "info"
    assert entry["offsets"] == {"0": 12, "3": 7}
