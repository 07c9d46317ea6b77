"""Unit tests of the shared library: oracles, generators, tolerances, checks, finite differences."""

import numpy as np
import pytest
import torch

from normgrad import checks, gradcheck, inputs, reference, tolerances

RNG = np.random.default_rng(1234)


# --- reference: the oracles agree with finite differences and with the definitions ----------

def _numeric_layernorm(x, gamma, beta, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def test_layernorm_oracle_forward_matches_definition():
    x = inputs.sample(RNG, (5, 11))
    gamma, beta = inputs.affine(RNG, 11)
    ref = reference.layernorm(x, gamma, beta)
    assert gradcheck.relative_error(ref.y, _numeric_layernorm(x, gamma, beta, 1e-5)) < 1e-14
    assert ref.mean.shape == ref.rstd.shape == (5,)
    np.testing.assert_allclose(ref.rstd, 1 / np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-14)


def test_layernorm_oracle_gradients_match_finite_differences():
    x = inputs.sample(RNG, (3, 7))
    gamma, beta = inputs.affine(RNG, 7)
    dy = inputs.upstream(RNG, x.shape)
    ref = reference.layernorm(x, gamma, beta, dy=dy)
    numeric = gradcheck.numerical_gradient(lambda v: _numeric_layernorm(v, gamma, beta, 1e-5), x, dy)
    assert gradcheck.relative_error(ref.dx, numeric) < 1e-8
    np.testing.assert_allclose(ref.dbeta, dy.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(ref.dgamma, (dy * ref.x_hat).sum(axis=0), rtol=1e-12)


def test_batchnorm_oracle_reduces_every_axis_but_one():
    x = inputs.sample(RNG, (4, 3, 2, 5), norm="batch")
    gamma, beta = inputs.affine(RNG, 3)
    ref = reference.batchnorm(x, gamma, beta, dy=inputs.upstream(RNG, x.shape))
    mean = x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(ref.mean, mean, rtol=1e-13)
    np.testing.assert_allclose(ref.rstd, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5), rtol=1e-12)
    assert ref.dx.shape == x.shape and ref.dgamma.shape == (3,)


def test_batchnorm_eval_oracle_is_an_affine_map_of_x():
    x = inputs.sample(RNG, (6, 4), norm="batch")
    gamma, beta = inputs.affine(RNG, 4)
    rm, rv = RNG.normal(size=4), RNG.uniform(0.5, 2, 4)
    dy = inputs.upstream(RNG, x.shape)
    ref = reference.batchnorm_eval(x, gamma, beta, rm, rv, dy=dy)
    np.testing.assert_allclose(ref.dx, dy * gamma / np.sqrt(rv + 1e-5), rtol=1e-13)


def test_oracle_accepts_half_precision_tensors_exactly():
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    ref = reference.layernorm(x, torch.ones(8, dtype=torch.bfloat16), torch.zeros(8, dtype=torch.bfloat16))
    assert ref.y.dtype == np.float64
    assert gradcheck.relative_error(ref.y, _numeric_layernorm(x.double().numpy(), 1, 0, 1e-5)) < 1e-14


def test_layernorm_jacobian_has_the_shape_and_the_property_of_a_projection():
    J = reference.layernorm_jacobian(RNG.normal(size=6))
    assert J.shape == (6, 6)
    np.testing.assert_allclose(J.sum(axis=1), 0, atol=1e-12)  # x_hat is unchanged by adding a constant to x


# --- inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("norm,axes", [("layer", (1,)), ("batch", (0,))])
def test_generated_groups_have_the_statistics_asked_for(norm, axes):
    tiny = inputs.sample(RNG, (40, 30), norm, "tiny-variance")
    assert np.all(tiny.var(axis=axes) < 1e-5 / 8)  # far below eps
    offset = inputs.sample(RNG, (40, 30), norm, "large-offset")
    assert np.all(np.abs(offset.mean(axis=axes)) > 500)
    const = inputs.sample(RNG, (40, 30), norm, "constant")
    assert np.all(const.var(axis=axes) == 0) and np.all(const - const.mean(axis=axes, keepdims=True) == 0)


def test_group_axes_and_unknown_kinds():
    assert inputs.group_axes((2, 3, 4, 5), "batch") == (0, 2, 3)
    assert inputs.group_axes((2, 3), "layer") == (1,)
    with pytest.raises(ValueError):
        inputs.sample(RNG, (2, 3), kind="noisy")


def test_upstream_gradients_are_not_all_ones_and_gamma_is_not_trivial():
    assert not np.allclose(inputs.upstream(RNG, (4, 5)), 1)
    gamma, beta = inputs.affine(RNG, 50)
    assert not np.allclose(gamma, 1) and not np.allclose(beta, 0)


# --- tolerances -----------------------------------------------------------------------------

def test_tolerances_follow_unit_roundoff():
    assert tolerances.rtol(np.float64) < tolerances.rtol(torch.float32) < tolerances.rtol("bfloat16")
    assert tolerances.rtol(torch.float16) < tolerances.rtol(torch.bfloat16)
    # cancellation adds K u per unit of kappa to the reductions' C u
    C, K, u64 = tolerances.ROUNDINGS, tolerances.CANCELLATION, tolerances.UNIT_ROUNDOFF["float64"]
    assert tolerances.rtol("float64", kappa=1000) == pytest.approx((C + 1000 * K) * u64)
    assert tolerances.rtol("float64", kappa=0.5) == tolerances.rtol("float64") == pytest.approx((C + K) * u64)
    assert tolerances.dtype_name(np.dtype("float32")) == tolerances.dtype_name(torch.float32) == "float32"
    with pytest.raises(ValueError):
        tolerances.rtol(np.int32)


def test_a_sixteen_bit_output_is_one_rounding_plus_float32_arithmetic():
    u16, u32 = tolerances.UNIT_ROUNDOFF["float16"], tolerances.UNIT_ROUNDOFF["float32"]
    C, K = tolerances.ROUNDINGS, tolerances.CANCELLATION
    assert tolerances.output_rtol(torch.float16, 40.0) == pytest.approx(u16 + (C + K * 40.0) * u32)
    assert tolerances.output_rtol("bfloat16", 1.0, truncated=True) == pytest.approx(2 * 2.0**-8 + (C + K) * u32)
    # the 16-bit part does not grow with kappa: kappa's cancellation happens in float32
    assert tolerances.output_rtol("float16", 1000.0) < 4 * u16 * 1000.0 / 10
    # dbeta = sum(dy) never sees x: its tolerance has no kappa
    dx, dgamma, dbeta = tolerances.backward_rtols(torch.bfloat16, 50.0)
    assert dx == dgamma > dbeta == tolerances.output_rtol(torch.bfloat16)
    # float32 and float64 are stored in the type they compute in: no separate rounding
    assert tolerances.output_rtol(torch.float32, 3.0) == (C + K * 3.0) * u32
    assert tolerances.rtol(torch.float16, 7.0) == tolerances.output_rtol(torch.float16, 7.0)


def test_correct_float32_code_fits_the_tolerance_and_a_half_precision_sum_does_not():
    """The tolerance of each dtype admits correct code and rejects what it is meant to catch."""
    x = inputs.sample(RNG, (64, 4096))
    exact = x.sum(axis=1)
    in_float32 = x.astype(np.float32).sum(axis=1, dtype=np.float32)
    assert checks.closeness_problems(in_float32, exact, "s", tolerances.rtol(np.float32)) == []
    xt = torch.from_numpy(x).to(torch.float16)
    exact16 = xt.double().sum(dim=1).numpy()
    accumulated_in_half = torch.zeros(64, dtype=torch.float16)
    for j in range(4096):  # a running sum kept in float16, as a naive kernel would
        accumulated_in_half += xt[:, j]
    carried_in_float32 = xt.float().sum(dim=1).half()
    assert checks.closeness_problems(carried_in_float32, exact16, "s", tolerances.rtol(torch.float16)) == []
    assert checks.closeness_problems(accumulated_in_half, exact16, "s", tolerances.rtol(torch.float16)) != []


def test_conditioning_grows_with_the_mean_offset():
    calm = inputs.sample(RNG, (8, 16))
    offset = inputs.sample(RNG, (8, 16), kind="large-offset", offset=1e3)
    assert tolerances.conditioning(calm, (1,)) < 20 < 500 < tolerances.conditioning(offset, (1,))


# --- checks ---------------------------------------------------------------------------------

def test_array_problems_name_what_is_wrong():
    good = np.zeros((2, 3))
    assert checks.array_problems(good, "dx", (2, 3), np.float64) == []
    assert "numpy.ndarray" in checks.array_problems([[0.0] * 3] * 2, "dx", (2, 3), np.float64)[0]
    assert "dtype float64" in checks.array_problems(good.astype(np.float32), "dx", (2, 3), np.float64)[0]
    assert "shape (3, 2)" in checks.array_problems(good, "dx", (3, 2), np.float64)[0]
    bad = good.copy()
    bad[1, 2] = np.nan
    assert "non-finite" in checks.array_problems(bad, "dx", (2, 3), np.float64)[0]


def test_array_subclasses_that_lie_are_refused():
    class Liar(np.ndarray):
        def __sub__(self, other):
            return np.zeros(self.shape)

    liar = np.ones((2, 3)).view(Liar)
    assert "numpy.ndarray" in checks.array_problems(liar, "dx", (2, 3), np.float64)[0]


def test_tensor_problems_check_dtype_and_device():
    t = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert checks.array_problems(t, "dx", (2, 3), torch.bfloat16, "cpu") == []
    assert "dtype torch.float32" in checks.array_problems(t, "dx", (2, 3), torch.float32, "cpu")[0]
    assert "should be a torch.Tensor" in checks.array_problems(np.zeros((2, 3)), "dx", (2, 3), torch.float32)[0]


def test_devices_compare_by_type_and_by_index_only_when_one_is_named():
    # a CUDA result is on 'cuda:0', never on the unindexed 'cuda' the cases name; no GPU needed to check
    class OnGpu:
        device = torch.device("cuda:0")

    assert checks.on_device(OnGpu, "cuda") and checks.on_device(OnGpu, "cuda:0")
    assert not checks.on_device(OnGpu, "cuda:1") and not checks.on_device(OnGpu, "cpu")
    assert not checks.on_device(torch.zeros(1), "cuda")
    assert "should be on cuda" in checks.array_problems(torch.zeros(2), "dx", (2,), torch.float32, "cuda")[0]


def test_closeness_reports_position_not_expected_values():
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    actual = expected.copy()
    actual[1, 0] += 0.5
    [message] = checks.closeness_problems(actual, expected, "dx", 1e-6)
    assert "(1, 0)" in message and "3.0" not in message and "1 of 4" in message
    assert checks.closeness_problems(expected + 1e-9, expected, "dx", 1e-6) == []
    assert checks.closeness_problems(np.full((2, 2), np.nan), expected, "dx", 1e-6) != []


def test_closeness_floor_for_results_that_are_rounding_noise():
    noise = np.full(4, 1e-15)
    assert checks.closeness_problems(np.zeros(4), noise, "x_hat", 1e-12) != []
    assert checks.closeness_problems(np.zeros(4), noise, "x_hat", 1e-12, floor=1.0) == []


def test_unmodified_problems_walk_dicts_and_tuples():
    before = {"x": np.ones(3), "eps": 1e-5}
    assert checks.unmodified_problems(before, {"x": np.ones(3), "eps": 1e-5}, "cache") == []
    changed = {"x": np.array([1.0, 2.0, 1.0]), "eps": 1e-5}
    assert "cache['x']" in checks.unmodified_problems(before, changed, "cache")[0]
    assert checks.unmodified_problems((np.ones(2),), (np.zeros(2),), "args") != []


def test_an_argument_resized_or_retyped_is_modified_and_never_copied_to_see_it():
    """An answer once resized its argument to 120 M booleans: converted to float64 before the shapes were
    compared, one notebook took the grader's own process to 2.5 GB. A view of 10^12 entries (8 TB as float64)
    shows that nothing is converted."""
    import torch

    huge = np.lib.stride_tricks.as_strided(np.zeros(1, bool), shape=(10**12,), strides=(0,))
    assert checks.unmodified_problems(np.ones(3), huge, "x") != []
    assert checks.unmodified_problems(np.ones(3), np.ones(3, dtype=bool), "x") != []
    assert checks.unmodified_problems(np.ones(3), np.ones(3, dtype=np.float32), "x") != []
    assert checks.unmodified_problems(torch.ones(3), torch.ones(3, dtype=torch.float64), "x") != []
    assert checks.unmodified_problems(torch.ones(3), torch.ones(3), "x") == []
    assert checks.unmodified_problems(np.ones(3), None, "x") != []


# --- finite differences ---------------------------------------------------------------------

def test_numerical_gradient_of_a_known_function():
    x = RNG.normal(size=(3, 4))
    dy = RNG.normal(size=(3, 4))
    numeric = gradcheck.numerical_gradient(lambda v: np.sin(v) * v, x, dy)
    exact = dy * (np.cos(x) * x + np.sin(x))
    assert gradcheck.relative_error(numeric, exact) < 1e-9
    assert gradcheck.relative_error(exact, exact) == 0.0


def test_notebook_tests_of_numpy_and_torch_exercises_run_in_the_notebooks_own_process(root):
    """A child process per test is for Triton kernels, which can crash the interpreter; forking one for
    every case of the other exercises made their notebooks ten times slower where TRITON_INTERPRET=1
    is set (as it is in any process that imported the course's Triton module on a CPU)."""
    import os
    import subprocess
    import sys

    probe = ("import os\nfrom normgrad.cases import TestsFailed, run_tests\npids = set()\n"
             "def mine(x, gamma, beta, eps=1e-5):\n    pids.add(os.getpid())\n"
             "try:\n    run_tests('01-forward', 'layernorm_forward', mine)\nexcept TestsFailed:\n    pass\n"
             "print('pids', pids == {os.getpid()})\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, TRITON_INTERPRET="1"), timeout=120)
    assert "pids True" in done.stdout, done.stdout + done.stderr


def test_a_test_forked_after_pytorch_started_its_threads_runs_instead_of_hanging(root):
    """The notebook forks each Triton test (normgrad/cases/child.py). A student who ran any sizeable
    PyTorch operation first has started PyTorch's thread pool, which a forked child lacks: the child
    waited for it until the time limit, and every test "took longer than 60 s"."""
    import os
    import subprocess
    import sys

    probe = ("import torch\nfrom normgrad.cases.child import in_child\ntorch.set_num_threads(2)\n"
             "a = torch.randn(1000, 1000, dtype=torch.float64)\n(a @ a).sum()  # the pool starts\n"
             "print(in_child(lambda: [str(float((a @ a).trace() > 0))], 20))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert done.stdout.strip() in ("['1.0']", "['0.0']"), done.stdout + done.stderr


def test_the_exercises_quote_the_tolerances_as_computed():
    """Exercises 01 to 04 and 06 quote the float64 and float32 tolerances at kappa = 1 and 10, and 04 and 06 u16."""
    from autograder.course import notebooks, read

    quoted = {("float64", 1): 6e-14, ("float64", 10): 9e-14, ("float32", 1): 3e-5, ("float32", 10): 5e-5}
    for (dtype, kappa), figure in quoted.items():
        assert tolerances.output_rtol(dtype, kappa) == pytest.approx(figure, rel=0.1), (dtype, kappa)
    assert tolerances.UNIT_ROUNDOFF["float16"] == pytest.approx(5e-4, rel=0.03)
    assert tolerances.UNIT_ROUNDOFF["bfloat16"] == pytest.approx(4e-3, rel=0.03)
    plain = ("6e-14 to 9e-14", "3e-5 to 5e-5", "2^9 + 2^5 kappa")
    for assignment, figures in {"01-forward": plain, "02-chain-rule": plain, "03-variance-derivative": plain,
                                "04-code-mapping": plain,
                                "06-triton": ("6 \\times 10^{-14}", "9 \\times 10^{-14}", "2^9 + 2^5\\kappa")}.items():
        text = "\n".join(c.source for c in read(notebooks(assignment).source).cells if c.cell_type == "markdown")
        text = " ".join(text.split())  # a figure may be wrapped across lines
        for figure in figures:
            assert figure in text, (assignment, figure)
    assert (tolerances.ROUNDINGS, tolerances.CANCELLATION) == (2**9, 2**5)


def test_a_crashed_childs_last_words_are_dropped_and_a_finished_childs_passed_on(capfd):
    """A kernel that crashes the interpreter leaves glibc's and NumPy's noise around the test's one line:
    the child's stderr is held until it ends, and passed on only when it ended by itself."""
    import os
    import signal
    import sys

    from normgrad.cases.child import CRASH_HINT, in_child

    def crashing():
        os.write(2, b"malloc(): unaligned tcache chunk detected\n")  # as glibc writes, to the descriptor
        print("RuntimeWarning: overflow encountered in multiply", file=sys.stderr)  # as Python's warnings do
        os.kill(os.getpid(), signal.SIGSEGV)
        return []

    def finishing():
        os.write(2, b"a line the kernel printed\n")
        print("a warning of the student's code", file=sys.stderr)
        return ["dx is wrong"]

    assert in_child(crashing, 20) == [f"crashed (SIGSEGV): {CRASH_HINT}"]
    said = capfd.readouterr().err
    assert "tcache" not in said and "overflow" not in said, said
    assert in_child(finishing, 20) == ["dx is wrong"]
    said = capfd.readouterr().err
    assert "a line the kernel printed" in said and "a warning of the student's code" in said, said
