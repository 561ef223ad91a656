"""The shipped trace slices load whole and keep the source's values."""

from __future__ import annotations

from corral.fleetbench.traces import (
    MOONCAKE_BLOCK_TOKENS,
    TraceRow,
    decode_runs,
    describe,
    encode_runs,
    load_azure,
    load_mooncake,
    mooncake_slice_lines,
    parse_azure,
    spread_ties,
)


def test_azure_slices_have_2000_rows_starting_at_zero() -> None:
    for service in ("conv", "code"):
        rows = load_azure(service)
        assert len(rows) == 2000
        assert rows[0].t == 0.0
        assert [r.t for r in rows] == sorted(r.t for r in rows)
        assert all(r.prompt_tokens >= 1 and r.output_tokens >= 1 for r in rows)
        assert all(r.prefix == () for r in rows)


def test_azure_first_rows_match_the_source() -> None:
    conv = load_azure("conv")
    # 2023-11-16 18:15:46.6805900,374,44 then 18:15:50.9951690,396,109
    assert (conv[0].prompt_tokens, conv[0].output_tokens) == (374, 44)
    assert (conv[1].prompt_tokens, conv[1].output_tokens) == (396, 109)
    assert abs(conv[1].t - 4.314579) < 1e-6
    code = load_azure("code")
    assert (code[0].prompt_tokens, code[0].output_tokens) == (4808, 10)


def test_code_trace_has_long_contexts_and_short_outputs() -> None:
    stats = describe(load_azure("code"))
    assert stats["mean_prompt"] > 1500
    assert stats["mean_output"] < 50


def test_mooncake_slice_has_3000_rows_with_512_token_blocks() -> None:
    rows = load_mooncake()
    assert len(rows) == 3000
    assert rows[0] == TraceRow(0.0, 6758, 500, tuple(range(14)))
    assert rows[1].prefix == (0, *range(14, 28))
    # one id per started 512-token block, and every prompt opens with block 0
    assert all(
        len(r.prefix) == -(-r.prompt_tokens // MOONCAKE_BLOCK_TOKENS) and r.prefix[0] == 0
        for r in rows
    )


def test_runs_round_trip() -> None:
    ids = (0, 68, 69, 70, 5, 7, 8)
    assert encode_runs(ids) == "0 68-70 5 7-8"
    assert decode_runs(encode_runs(ids)) == ids
    assert decode_runs("") == ()


def test_mooncake_re_encoding_keeps_values() -> None:
    jsonl = [
        '{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}',
        '{"timestamp": 1500, "input_length": 10, "output_length": 2, "hash_ids": [0]}',
        '{"timestamp": 2000, "input_length": 9, "output_length": 1, "hash_ids": [9]}',
    ]
    lines = mooncake_slice_lines(jsonl, 2)
    assert lines == [
        "timestamp_ms,input_length,output_length,hash_ids",
        "0,600,3,0-1",
        "1500,10,2,0",
    ]


def test_parse_azure_handles_seven_fractional_digits() -> None:
    rows = parse_azure(
        [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            "2023-11-16 23:59:59.9000000,1,2",
            "2023-11-17 00:00:00.1500000,3,4",
        ]
    )
    assert abs(rows[1].t - 0.25) < 1e-9


def test_spread_ties_spaces_equal_timestamps_within_the_width() -> None:
    rows = [TraceRow(0.0, 1, 1), TraceRow(0.0, 2, 1), TraceRow(0.0, 3, 1), TraceRow(5.0, 4, 1)]
    out = spread_ties(rows, width=0.9)
    assert [r.t for r in out] == [0.0, 0.3, 0.6, 5.0]
    assert [r.prompt_tokens for r in out] == [1, 2, 3, 4]
