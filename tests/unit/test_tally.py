"""The counts every command that stores predictions prints: rated, unrated with the top reasons, failed."""

from __future__ import annotations

from prelabel.tally import Tally, reason_key


def test_reasons_that_differ_only_in_request_ids_and_numbers_count_as_one():
    first = "judge call failed: openai:m: HTTP 400 (request id req_abc123): 'logprobs' is not supported"
    second = "judge call failed: openai:m: HTTP 400 (request id req_zzz999): 'logprobs' is not supported"
    assert reason_key(first) == reason_key(second)
    assert reason_key("x" * 500).endswith("…") and len(reason_key("x" * 500)) == 160


def test_tally_counts_each_kind_and_lists_the_commonest_reasons():
    tally = Tally()
    for n in range(5):
        tally.add(
            error=None, unrated_reason=f"judge call failed: HTTP 400 (request id req_{n}x): no logprobs", rated=False
        )
    tally.add(error=None, unrated_reason="judge answer did not parse twice: ...", rated=False)
    tally.add(error=None, unrated_reason=None, rated=True)
    tally.add(error="task 3: bad input: data.dialogue: is missing", unrated_reason=None, rated=False)
    tally.add(error=None, unrated_reason=None, rated=False)  # a classification without a judge
    assert (tally.rated, tally.unrated, tally.failed, tally.unjudged, tally.total) == (1, 6, 1, 1, 9)
    assert tally.headline() == "1 rated, 6 unrated, 1 labeled with no judge, 1 failed"
    (top, count), *_ = tally.top_unrated()
    assert count == 5 and "no logprobs" in top
    other = Tally()
    other.add(error=None, unrated_reason=None, rated=True)
    tally.merge(other)
    assert tally.rated == 2
