"""The caching arithmetic of GET answers: max-age, stale answers, validators compared as RFC 9110 says."""

from __future__ import annotations

from weathernote.http.caching import Validity, entity_tag

FETCHED = 1_765_000_000_000  # ms
VALID = Validity(last_modified_ms=FETCHED + 500, next_update_ms=FETCHED + 600_000, stale=False)


def test_max_age_runs_until_the_next_update_and_never_below_zero() -> None:
    headers = VALID.headers('"t"', FETCHED + 1_000)
    assert headers["Cache-Control"] == "public, max-age=599, stale-while-revalidate=60"
    assert headers["ETag"] == '"t"' and "Vary" not in headers
    assert VALID.headers('"t"', FETCHED + 700_000)["Cache-Control"].startswith("public, max-age=0,")
    assert headers["Last-Modified"] == "Sat, 06 Dec 2025 05:46:40 GMT"


def test_a_stale_answer_is_kept_only_while_revalidated() -> None:
    stale = Validity(FETCHED, FETCHED + 600_000, stale=True)
    assert stale.headers('"t"', FETCHED)["Cache-Control"].startswith("public, max-age=0,")


def test_validators() -> None:
    tag = entity_tag(b"body")
    assert tag.startswith('"') and len(tag) == 34 and tag != entity_tag(b"body ")
    assert VALID.unchanged_for({"if-none-match": tag}, tag)
    assert VALID.unchanged_for({"if-none-match": f'"a", W/{tag}'}, tag)
    assert VALID.unchanged_for({"if-none-match": "*"}, tag)
    assert not VALID.unchanged_for({"if-none-match": '"a"'}, tag)
    modified = "Sat, 06 Dec 2025 05:46:40 GMT"
    assert VALID.unchanged_for({"if-modified-since": modified}, tag)
    assert not VALID.unchanged_for({"if-modified-since": "Sat, 06 Dec 2025 05:46:39 GMT"}, tag)
    assert not VALID.unchanged_for({"if-modified-since": "not a date"}, tag)
    assert not VALID.unchanged_for({"if-modified-since": "Sat, 06 Dec 2025 05:46:40"}, tag), "no zone: ignored"
    assert not VALID.unchanged_for({"if-none-match": '"a"', "if-modified-since": modified}, tag)
    assert not VALID.unchanged_for({}, tag)
