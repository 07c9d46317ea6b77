"""Chapter 6's GPU benchmark without a GPU: its results file, the targets it judges, its figure.

Every number here is synthetic and says so; a measurement comes only from a GPU run
(`make gpu-check`), and the dry run (tests/test_gpu_check.py) runs the measuring code itself.
"""

import json

import pytest

from normgrad import benchmark

GOOD = {"v1 rowwise": 0.45, "v2 locked": 0.6, "v3 persistent": 0.85, "v4 prefetch": 0.9, "v5 split": 0.5,
        "torch": 0.5, "torch.compile": 0.7, "liger": 0.8}  # fractions of the copy bandwidth, made up


def synthetic_results(date="2026-01-02", fractions=GOOD, deterministic=True):
    """A results file's content with made-up times, marked synthetic: for tests only, never committed."""
    rows = []
    for dtype in benchmark.DTYPE_NAMES:
        for m in benchmark.ROWS:
            for n in benchmark.COLUMNS:
                for impl, fraction in fractions.items():
                    gbs = 1000.0 * fraction
                    rows.append({"impl": impl, "dtype": dtype, "M": m, "N": n, "gb_per_s": gbs, "reps": 5,
                                 "ms": benchmark.traffic_bytes(m, n, dtype) / (gbs * 1e6),
                                 "deterministic": deterministic or impl not in benchmark.PERSISTENT})
    checks = {impl: {f"{d} N={n}": "pass" for d in benchmark.DTYPE_NAMES for n in benchmark.COLUMNS}
              for impl in fractions if impl in benchmark.COURSE}
    results = {"schema": benchmark.SCHEMA, "synthetic": True, "gpu": "Synthetic GPU 80GB", "date": date,
               "dry_run": False, "fastest": "", "copy_gb_per_s": 1000.0, "checks": checks, "skipped": [],
               "targets": [], "rows": rows}
    results["fastest"] = benchmark.fastest_rung(results)
    results["targets"] = benchmark.targets(results)
    return results


def test_the_rungs_are_chapter_6_s():
    from normgrad import triton_layernorm

    assert benchmark.COURSE == tuple(triton_layernorm.VERSIONS)
    assert benchmark.PERSISTENT == tuple(triton_layernorm.PERSISTENT)


def test_the_targets_are_about_the_fastest_rung_that_passed_every_check():
    assert synthetic_results()["fastest"] == "v4 prefetch"
    assert synthetic_results(fractions=dict(GOOD, **{"v3 persistent": 0.95}))["fastest"] == "v3 persistent"
    wrong = synthetic_results(fractions=dict(GOOD, **{"v3 persistent": 0.95}))
    wrong["checks"]["v3 persistent"]["float16 N=768"] = "dx is wrong: ..."
    assert benchmark.fastest_rung(wrong) == "v4 prefetch"  # faster, but wrong somewhere: never the one judged
    partial = synthetic_results()
    partial["rows"] = [r for r in partial["rows"] if not (r["impl"] == "v4 prefetch" and r["N"] == 512)]
    partial["rows"] = [r for r in partial["rows"] if not (r["impl"] == "v3 persistent" and r["N"] == 768)]
    assert benchmark.fastest_rung(partial) == "v4 prefetch"  # judged on the shapes both were timed at
    nothing = synthetic_results()
    nothing["rows"] = []
    assert benchmark.fastest_rung(nothing) == benchmark.COURSE[-1]


def test_traffic_counts_x_dy_dx_then_gamma_dgamma_dbeta_then_the_statistics():
    assert benchmark.traffic_bytes(4096, 1024, "bfloat16") == 3 * 4096 * 1024 * 2 + 3 * 1024 * 2 + 8 * 4096
    assert benchmark.traffic_bytes(10, 3, "float32") == 3 * 30 * 4 + 3 * 3 * 4 + 80


def test_results_round_trip_and_the_latest_measurement_is_found(tmp_path):
    assert benchmark.find_results(tmp_path) is None
    older = benchmark.write_results(synthetic_results("2026-01-02"), tmp_path)
    newer = benchmark.write_results(synthetic_results("2026-03-04"), tmp_path)
    dry = synthetic_results("2026-05-06")
    dry.update(dry_run=True, gpu="dry run on a CPU")
    benchmark.write_results(dry, tmp_path)  # a dry run is never what the chapter draws
    assert older.name == "bench-synthetic-gpu-80gb-2026-01-02.json"
    assert benchmark.find_results(tmp_path) == newer
    assert benchmark.read_results(newer) == synthetic_results("2026-03-04")


@pytest.mark.parametrize("damage,message", [
    (lambda r: r.pop("copy_gb_per_s"), "copy_gb_per_s"),
    (lambda r: r.pop("dry_run"), "dry_run"),
    (lambda r: r.pop("fastest"), "fastest"),
    (lambda r: r.update(schema=1), "schema 1"),
    (lambda r: r.update(date="March"), "YYYY-MM-DD"),
    (lambda r: r["rows"][3].update(impl="cublas"), "row 3"),
    (lambda r: r["rows"][0].update(ms=-1.0), "row 0"),
    (lambda r: r["rows"][5].pop("deterministic"), "row 5"),
])
def test_a_malformed_results_file_is_refused_with_a_reason(tmp_path, damage, message):
    results = synthetic_results()
    damage(results)
    path = tmp_path / "bench-x-2026-01-02.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=message):
        benchmark.read_results(path)


def test_targets_met_when_the_fastest_kernel_is_fast_everywhere():
    found = synthetic_results()["targets"]
    assert [t["met"] for t in found] == [True] * 6
    assert found[0]["measured"] == pytest.approx(0.9, rel=1e-3)  # 3 M N e dominates the traffic
    assert found[4]["measured"] == pytest.approx(0.9 / 0.5)  # the geometric mean over eager PyTorch


def test_each_missed_target_says_where_and_by_how_much():
    slow = dict(GOOD, **{"v3 persistent": 0.7, "v4 prefetch": 0.78, "liger": 0.8})
    light, eager, compiled, liger, mean, same_bits = synthetic_results(fractions=slow, deterministic=False)["targets"]
    assert light["met"] is False
    assert {round(x["short_by"], 3) for x in light["misses"]} == {0.07}  # 0.85 - 0.78, at every large shape
    assert all(x["dtype"] == "bfloat16" and x["N"] >= 1024 and x["M"] * x["N"] >= 2**26 for x in light["misses"])
    assert len(light["misses"]) == 6 + 3 + 1  # N >= 1024 at M = 65536, N >= 4096 at 16384, N = 16384 at 4096
    assert eager["met"] is True and compiled["met"] is True and mean["met"] is True
    assert liger["met"] is False and len(liger["misses"]) == len(benchmark.DTYPE_NAMES) * 24
    assert liger["misses"][0]["speedup"] == pytest.approx(0.78 / 0.8, rel=1e-3)
    assert same_bits["met"] is False and same_bits["measured"] == 0


def test_a_target_with_nothing_to_judge_it_by_is_neither_met_nor_missed():
    results = synthetic_results(fractions={"v4 prefetch": 0.9})
    found = benchmark.targets(results)
    assert [t["met"] for t in found] == [True, None, None, None, None, True]


def test_summary_quotes_the_speed_of_light_ratio_and_each_speedup():
    got = benchmark.summary(synthetic_results())
    assert got["fraction_of_copy"] == pytest.approx({d: 0.9 for d in benchmark.DTYPE_NAMES}, rel=1e-3)
    assert got["speedup"]["torch"] == pytest.approx({d: 1.8 for d in benchmark.DTYPE_NAMES})
    assert got["speedup"]["liger"] == pytest.approx({d: 0.9 / 0.8 for d in benchmark.DTYPE_NAMES})


def test_the_figure_draws_gb_per_s_and_the_fraction_for_every_implementation_and_says_synthetic():
    fig = benchmark.figure(synthetic_results())
    columns = len(benchmark.DTYPE_NAMES)
    top, bottom = fig.axes[:columns], fig.axes[columns:]
    assert [ax.get_title() for ax in top] == [f"{d}, M = 65536" for d in benchmark.DTYPE_NAMES]
    assert all(len(ax.get_lines()) == len(benchmark.IMPLS) + 1 for ax in top)  # and the copy bandwidth
    assert all(len(ax.get_lines()) == len(benchmark.IMPLS) + 2 for ax in bottom)  # and 100% and the target
    assert fig._suptitle.get_text().startswith("SYNTHETIC TEST DATA")


def test_the_report_names_every_target():
    text = benchmark.report(synthetic_results())
    assert text.count("MET") == 6 and "speedup over torch.compile" in text


def chapter_cell(root) -> str:
    text = (root / "chapters" / "06-triton.md").read_text()
    return text[text.index("(measured)="):].split("```{code-cell} ipython3\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.parametrize("recorded", [True, False])
def test_chapter_6_draws_and_quotes_the_results_file_or_says_there_is_none(root, tmp_path, monkeypatch, recorded):
    import IPython.display
    import matplotlib.figure

    results = synthetic_results(fractions=dict(GOOD, **{"v3 persistent": 0.7, "v4 prefetch": 0.78}))
    results["kernels"] = [{"impl": "v4 prefetch", "dtype": "bfloat16", "M": 65536, "N": 16384, "ROWS": 1,
                           "num_warps": 32, "registers": 64, "spilled_words": 30, "resident_warps": 32,
                           "second_reduction_ms": 0.0123},
                          {"impl": "v3 persistent", "dtype": "bfloat16", "M": 65536, "N": 16384, "ROWS": 1,
                           "num_warps": 16, "registers": 99, "spilled_words": 0, "resident_warps": 16,
                           "second_reduction_ms": 0.0123}]  # not the fastest rung: not in the chapter's table
    path = benchmark.write_results(results, tmp_path)
    monkeypatch.setattr(benchmark, "find_results", lambda: path if recorded else None)
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    exec(chapter_cell(root), {})
    text = shown[-1].data
    if not recorded:
        assert len(shown) == 1 and text.startswith("**No GPU measurement has been recorded yet.**")
        return
    assert isinstance(shown[0], matplotlib.figure.Figure)
    assert "Measured on Synthetic GPU 80GB on 2026-01-02" in text and "copy 1000 GB/s" in text
    assert "- bfloat16: at least 78% of the copy bandwidth" in text
    assert "| **no** | 0.780 | 10 shape(s), at worst 0.070 |" in text
    assert "| 65536 | 16384 | no | 1 | 32 | 64 | 30 | 32 | 12.3 us |" in text and "| 99 |" not in text


def test_a_miss_carries_what_was_measured_about_the_kernel_there():
    results = synthetic_results(fractions=dict(GOOD, **{"v3 persistent": 0.7, "v4 prefetch": 0.78}))
    row = next(r for r in results["rows"] if (r["impl"], r["dtype"], r["M"], r["N"]) ==
               ("v4 prefetch", "bfloat16", 65536, 16384))
    results["kernels"] = [{"impl": "v4 prefetch", "dtype": "bfloat16", "M": 65536, "N": 16384, "ROWS": 1,
                           "num_warps": 32, "registers": 64, "spilled_words": 30, "resident_warps": 32, "programs": 132,
                           "second_reduction_ms": row["ms"] / 10, "first_pass_ms": row["ms"] * 0.8}]
    row["host_ms"] = 0.021
    miss = next(x for x in benchmark.targets(results)[0]["misses"] if (x["M"], x["N"]) == (65536, 16384))
    assert miss["spilled_words"] == 30 and miss["resident_warps"] == 32
    assert (miss["rows_per_step"], miss["num_warps"]) == (1, 32)
    assert miss["second_reduction_share"] == pytest.approx(0.1) and miss["first_pass_share"] == pytest.approx(0.8)
    assert miss["host_ms"] == 0.021


def wide_and_short(results: dict) -> dict:
    """Synthetic kernel records for the shortfalls: the widest bfloat16 rows spill in v3 and v4 and are split
    by v5; every persistent rung's second reduction takes 5 % of the call alone; v5's host work is visible."""
    times = {(r["impl"], r["dtype"], r["M"], r["N"]): r for r in results["rows"]}
    results["kernels"] = []
    for (impl, d, m, n), r in times.items():
        if impl in benchmark.PERSISTENT:
            wide = n == max(benchmark.COLUMNS)
            results["kernels"].append({"impl": impl, "dtype": d, "M": m, "N": n, "ROWS": 1, "num_warps": 32,
                                       "programs": 264 if impl == "v5 split" and wide else 132,
                                       "split": impl == "v5 split" and wide, "resident_warps": 32,
                                       "spilled_words": 0 if impl == "v5 split" or not wide else 40,
                                       "second_reduction_ms": 0.05 * r["ms"]})
    for (impl, d, m, n), r in times.items():  # v5, where it is v4's kernel, 10 us slower on short calls only
        if impl == "v5 split" and n != max(benchmark.COLUMNS):
            r["ms"] = times[("v4 prefetch", d, m, n)]["ms"] + (0.010 if m == min(benchmark.ROWS) else 0.0)
    return results


def sentence(said: list[str], start: str) -> str:
    found = [x for x in said if x.startswith(start)]
    assert len(found) == 1, (start, said)
    return found[0]


def test_the_shortfalls_say_why_from_what_was_measured_and_only_that():
    bare = benchmark.shortfalls(synthetic_results())  # times only, v4 fastest everywhere: one sentence
    assert len(bare) == 1 and "second reduction" not in bare[0] and "host" not in bare[0]
    assert bare[0].startswith("At M = 4096 no rung takes less than 14.0 us, where moving the counted bytes at the "
                              "copy rate would take 12.6 us at the narrowest (bfloat16, N = 512)")  # 12.6 / 0.9

    said = benchmark.shortfalls(wide_and_short(synthetic_results()))
    wide = sentence(said, "At N = 16384 (bfloat16, M = 65536) a row no longer fits")
    assert "v3 persistent spills 40 32-bit words per thread and v4 prefetch spills 40" in wide
    assert "v5 splits each row between two programs and spills nothing, but reaches only 0.50" in wide
    second = sentence(said, "v4 prefetch's second reduction, timed alone")
    assert "takes up to 5% of a whole call's time" in second and "Inside a call" not in second  # 0.05 + 0.9 < 1
    assert ("a median 10.0 us longer than v4 at M = 4096 and a median 0.0 us apart at M = 65536"
            in sentence(said, "At M = 4096"))
    assert len(said) == 3  # Liger-Kernel's 0.8 of the copy rate never beats v4's 0.9

    results = wide_and_short(synthetic_results(fractions=dict(GOOD, liger=0.95)))
    results["flush_ms"] = 0.064
    for r in results["rows"]:
        r["host_ms"] = 0.030 if r["impl"] == "torch" else 0.090
        if (r["impl"], r["dtype"], r["N"]) == ("v3 persistent", "float32", 768):
            r["ms"] /= 2  # v3 the fastest rung at three shapes
    for k in results["kernels"]:
        k["first_pass_ms"], k["second_reduction_ms"] = 0.5 * k["second_reduction_ms"], 15 * k["second_reduction_ms"]
        k["reduction"] = {"programs": 32, "BLOCK_COLS": 16, "BLOCK_P": 256}
    said = benchmark.shortfalls(results)
    assert sentence(said, "v4 prefetch has the highest geometric mean of GB/s, yet it is the fastest rung at only "
                          "69 of 72 shapes (v3 persistent at 3, v5 split at 0).")
    second = sentence(said, "v4 prefetch's second reduction")
    assert "in 32 programs of 16 columns, 256 partial rows a step. The first pass alone takes" in second
    assert "would leave the first pass to move its bytes at 3.60 times the copy rate" in second  # 0.9 / 0.25
    assert "The first pass alone takes" in second and second.index("first pass alone") < second.index("Inside")
    assert ("The host takes 90.0 to 90.0 us to issue its call (eager PyTorch 30.0 to 30.0 us), and the L2 flush "
            "before it keeps the GPU busy for 64.0 us") in sentence(said, "At M = 4096")
    assert sentence(said, "Liger-Kernel is faster than v4 prefetch at 72 of 72 shapes")


def test_the_shortfalls_of_the_first_h200_run_point_at_the_spills_and_the_second_reduction():
    path = benchmark.RESULTS_DIR / "bench-nvidia-h200-2026-11-30.json"
    said = benchmark.shortfalls(benchmark.read_results(path))
    assert "fastest rung at only 17 of 72 shapes" in sentence(said, "v3 persistent has the highest geometric mean")
    wide = sentence(said, "At N = 16384 (bfloat16, M = 65536)")
    assert "v3 persistent spills 52 32-bit words per thread" in wide and "reaches only 0.49" in wide
    # alone, with the L2 flushed, the second reduction would not fit in the call's time beside the bytes
    assert "the first pass to move its bytes at 2.14 times the copy rate" in sentence(said, "v3 persistent's second")
    assert ("a median 17.3 us longer than v4 at M = 4096 and a median 0.2 us apart at M = 65536"
            in sentence(said, "At M = 4096"))
    assert sentence(said, "Liger-Kernel is faster than v3 persistent at 16 of 72 shapes")
    # that run's torch.compile made N symbolic after its first graph: only bfloat16 N = 512 was compiled for itself
    assert ("At M = 65536 in bfloat16 it reached 0.45 of the copy bandwidth at N = 512, and 0.11 to 0.14 at the "
            "other N (eager PyTorch 0.18 to 0.43)") in sentence(said, "torch.compile's graphs here, after its first "
                                                                      "(bfloat16, N = 512)")


# runs 3 and 4 in their folders of gpu-results; run 5, of the same day, in chapters/data
BENCH_12_04 = "bench-nvidia-h200-2026-12-04.json"


def test_the_shortfalls_say_whether_v5_s_host_work_still_costs_it_beside_v4(root):
    """Run 3 timed v5 deciding on every call whether to split (12 us of host work a call more than v4, the same
    kernel); run 4, the choice kept with the launch: the sentence follows the host times each file recorded."""
    run_3 = benchmark.shortfalls(benchmark.read_results(root / "gpu-results" / "run-3" / BENCH_12_04))
    assert ("a median 12.0 us longer than v4 at M = 4096 and a median 0.2 us apart at M = 65536: the only difference "
            "there is the host's work in deciding whether to split, which a long call hides (a median 12.5 us a call)"
            ) in sentence(run_3, "At M = 4096")
    run_4 = benchmark.shortfalls(benchmark.read_results(root / "gpu-results" / "run-4" / BENCH_12_04))
    assert ("the host issues its call as fast (a median 0.8 us more than for v4's): the calls are a median 2.0 us "
            "shorter than v4's at M = 4096 and a median 0.2 us apart at M = 65536, since v5 decides whether to split "
            "once per shape") in sentence(run_4, "At M = 4096")
    run_5 = benchmark.shortfalls(benchmark.read_results(benchmark.RESULTS_DIR / BENCH_12_04))
    assert "the host issues its call as fast (a median 2.6 us less than for v4's)" in sentence(run_5, "At M = 4096")


def test_the_shortfalls_say_when_torch_compile_was_compiled_for_any_row_length():
    results = synthetic_results()
    results["torch_compile"] = "torch.compile(...): one graph per (dtype, N) with M dynamic"  # before COMPILED_AS
    caveat = sentence(benchmark.shortfalls(results), "torch.compile's graphs here, after its first (bfloat16, N = 512)")
    assert "it reached 0.70 of the copy bandwidth at N = 512, and 0.70 to 0.70 at the other N" in caveat
    results["torch_compile"] = benchmark.COMPILED_AS
    assert not any("torch.compile's graphs" in line for line in benchmark.shortfalls(results))


def test_torch_compile_is_measured_with_one_graph_per_row_length_and_the_rows_dynamic(monkeypatch):
    """The compiled baseline is specialized for each N, as the kernels it races are; only M is left dynamic.
    (By default Dynamo makes N symbolic at the first recompile, and every later graph is compiled for any N.)"""
    import torch
    import torch._dynamo

    for name in ("automatic_dynamic_shapes", "recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):  # implementations() sets these: restored after the test
            monkeypatch.setattr(torch._dynamo.config, name, getattr(torch._dynamo.config, name))
    torch._dynamo.reset()
    graphs = []

    def recording(gm, example_inputs):  # a backend that keeps the traced (symbolic) shapes and runs the graph
        values = [node.meta.get("example_value") for node in gm.graph.nodes if node.op == "placeholder"]
        graphs.append([tuple(v.shape) for v in values if isinstance(v, torch.Tensor)])
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda f, **kw: real_compile(f, backend=recording))
    compiled = benchmark.implementations()[0]["torch.compile"]
    for n in (48, 200):
        for m in (36, 20):
            compiled(*benchmark.inputs_for(m, n, "float32", "cpu"))
    torch._dynamo.reset()
    assert len(graphs) == 2, graphs  # one per N; the second M reuses it
    for n, shapes in zip((48, 200), graphs):
        x_shape = next(s for s in shapes if len(s) == 2)
        assert isinstance(x_shape[1], int) and x_shape[1] == n, shapes  # N static
        assert not isinstance(x_shape[0], int), shapes  # M symbolic


def test_a_benchmark_stopped_midway_leaves_what_it_measured_in_its_results_file(tmp_path, monkeypatch):
    """`main` writes the results after each (dtype, N); a kill after the first leaves a whole, readable file."""
    measured = synthetic_results()

    def stopped_after_the_first_shape(*args, checkpoint, **kwargs):
        first = [r for r in measured["rows"] if r["dtype"] == "bfloat16" and r["N"] == 512]
        checkpoint(dict(measured, rows=first, notes=[], fastest=None, targets=[]), "bfloat16 N=512")
        raise KeyboardInterrupt  # where a kill would stop it

    monkeypatch.setattr(benchmark, "measure", stopped_after_the_first_shape)
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(["--dry-run", "--out", str(tmp_path)])
    [path] = tmp_path.iterdir()  # the results file, and no scratch copy beside it
    kept = benchmark.read_results(path)
    assert {(r["dtype"], r["N"]) for r in kept["rows"]} == {("bfloat16", 512)} and kept["fastest"] == "v4 prefetch"
    assert kept["notes"] == ["the run was stopped after bfloat16 N=512: this file holds what was measured up to there"]
    assert [t["met"] for t in kept["targets"]] == [None] + [True] * 5  # nothing yet at N >= 1024


@pytest.mark.parametrize("error, line", [
    (RuntimeError(), "RuntimeError"),  # no message: `str(e).splitlines()[0]` raised IndexError in the handler
    (RuntimeError("CUDA error: an illegal memory access\nCompile with TORCH_USE_CUDA_DSA"),
     "RuntimeError: CUDA error: an illegal memory access"),
    (ValueError("x" * 1000), "ValueError: " + "x" * 300),
])
def test_an_exception_is_recorded_in_one_line_whatever_its_message(error, line):
    assert benchmark.error_line(error) == line
