"""What a static read of the solution cells finds suspicious, for the instructor to review.

The exercises ask for gradients computed by hand (COURSE_API.md). The sandbox
hides autograd while a graded call runs, but no in-process guard is perfect,
so the grader also reads the code that ran and flags what an honest answer
has no reason to write: PyTorch's operators reached directly (`torch.ops`,
`aten`, a backward operator's name), autograd asked for a gradient
(`autograd.grad`, `.backward()`, `grad_fn`), forward-mode AD or torch.func
(`import torch.autograd.forward_ad`, any `torch.autograd.*` module but the
Function machinery, `make_dual`, `import torch.func`), autograd's engine reached
by its handle (`_execution_engine`, `run_backward`, `_ImperativeEngine`, a bound
method's `__self__`) or through the sandbox's own modules (`import calling`),
another program or Python started (`subprocess`, `os.system`, `os.fork`: its PyTorch
is not locked), the guards of the calls reached around (`torch.overrides`, a
dispatch mode switched off, a tensor's memory read through `dlpack`, `ctypes` (imported,
or as `torch.ctypes`, `array.ctypes`), `frombuffer` or an `__array_interface__`, a Triton launch hook), PyTorch's
own decompositions and other tensor layouts (nested, MKL-DNN, sparse), the library's own
normalizations (`F.batch_norm`, `nn.LayerNorm`: their forward under finite differences is a gradient), complex
numbers (a complex step differentiates a forward numerically: `1j`, `(-1) ** 0.5`, `.imag`, `.conjugate`, a
dtype `'G'`), arithmetic defined on a class of the answer's own (`__mul__`, in its body or set on it later: dual
numbers), symbolic or extended-precision arithmetic
(`sympy`, `mpmath`, `decimal`, `np.longdouble`, a dtype `'g'`), threads (`threading`: a Triton launcher's guard
holds per thread), TorchScript
(`torch.jit`: its autodiff differentiates without the engine), code run from a
module's files (`__file__`, `runpy`, a path into site-packages), the interpreter's
insides (`gc.get_objects`, frames, `sys.modules`, `__dict__`), modules or attributes
found by computed names (`importlib`, `__import__`, `getattr(m, 'a' + 'b')`, `eval`,
`operator.attrgetter`, `getattr` passed around under another name; `getattr(m, 'name')`
and a class pattern's `case object(name=v)` are read as `m.name`), a cell too deeply nested for this read to parse, a framework the
exercise's own solution does not import, and, where the course's solution is a Triton
kernel, solution cells without one that stores anything. The exercise's own names are not suspicious: a
string `'layernorm_backward'` or `LayerNormFunction.backward` is the student's own.

A flag scores nothing: it is a line in `grades.csv`'s `flags` column and in
the feedback, and the course's solutions raise none (tests/test_grader_outputs.py).
"""

from __future__ import annotations

import ast
import re

from .copied import copied, flag_copies
from .course import nbgrader_meta, notebooks, read
from .pycode import defined_names, parse, unreadable

NO_KERNEL = ("no @triton.jit kernel that writes its results (tl.store) in the solution cells, yet tests passed: the "
             "exercise asks for the work in Triton")
FRAMEWORKS = {"torch", "jax", "tensorflow", "triton", "functorch", "autograd", "cupy", "numba"}
_BACKWARD_OP = re.compile(r"(^|[._])(aten|native_\w*backward|\w*norm_backward(_\w+)?|\w+_backward_(data|input)|"
                          r"torch_function|_C|_ops)($|[._])")
_AUTOGRAD = {"grad", "backward", "functional", "forward_ad", "graph", "gradcheck"}
# Forward-mode AD by its own names: its JVP with tangent dy*gamma is a normalization's gradient
_FORWARD_AD = {"make_dual", "unpack_dual", "dual_level", "enter_dual_level", "_make_dual", "_unpack_dual",
               "_make_dual_copy", "_enter_dual_level"}
# Autograd's engine by its handle, and what held one: the seal refuses them, an honest answer never names them
_ENGINE = {"_execution_engine", "run_backward", "_queue_callback", "queue_callback", "_ImperativeEngine",
           "_engine_run_backward", "_jit_differentiate", "_ENGINE", "_LockedEngine", "_distributed_autograd"}
# The modules beside the student's code in the sandbox (and the grader's package): never an answer's import
_INSIDE = {"bounds", "calling", "confine", "intact", "protocol", "wire", "autograder", "__main__"}
# The one part of torch.autograd an honest answer imports: the Function machinery (Function, once_differentiable)
_AUTOGRAD_ALLOWED = "torch.autograd.function"
_INTERNALS = {
    ("gc", "get_objects"), ("gc", "get_referrers"), ("gc", "get_referents"), ("sys", "_getframe"),
    ("sys", "modules"), ("inspect", "currentframe"), ("inspect", "stack"), ("inspect", "getmembers"),
    ("sys", "settrace"), ("sys", "setprofile"), ("sys", "addaudithook"),
}
_DUNDERS = {"__import__", "__builtins__", "__subclasses__", "__globals__", "__code__", "__closure__", "__self__",
            "f_back", "f_globals", "f_locals", "gi_frame", "tb_frame", "__loader__", "__spec__", "__dict__",
            "__getattribute__", "__match_args__"}  # a class pattern's positional names: attributes by strings
# A module's own files, read or run again: a fresh copy of PyTorch's Python derivative formulas is not sealed
_FILES = {"__file__", "__path__", "__cached__", "run_path", "run_module", "spec_from_file_location",
          "SourceFileLoader", "get_data"}
# TorchScript differentiates scripted code itself (DifferentiableGraph, ReverseSubgraph), without the engine
_TORCHSCRIPT = {"CompilationUnit", "last_executed_optimized_graph", "ReverseSubgraph", "DifferentiableGraph",
                "create_function", "graph_for"}
_DYNAMIC = {"eval", "exec", "compile", "__import__"}
# Another process: a Python started from the answer imports a PyTorch nothing has locked
_SPAWNING_MODULES = {"subprocess", "multiprocessing", "pty", "concurrent"}
_SPAWNING_CALLS = re.compile(r"os\.(system|popen|fork|forkpty|exec\w*|spawn\w*|posix_spawnp?)")
# Around a Triton exercise's call torch may only allocate and view (calling.kernel_work): these reach around that
_AROUND_GUARDS = {"_disable_current_modes", "DisableTorchFunction", "DisableTorchFunctionSubclass",
                  "_python_dispatch", "to_dlpack", "from_dlpack", "dlpack", "from_address", "frombuffer",
                  "ctypeslib", "_set_torch_function_mode", "_pop_mode", "_push_mode", "_DisableTorchDispatch",
                  "add_pre_run_hook", "ctypes", "_ctypes", "pythonapi", "PyDescr_NewMethod", "CDLL", "PyDLL",
                  "cdll", "pydll"}
# An array made over an address by a class that claims these: a tensor's memory read or written without torch
_RAW_MEMORY = {"__array_interface__", "__array_struct__", "__cuda_array_interface__"}
# Modules an answer has no reason to import; each reaches what the other flags watch by another road
_NEVER_IMPORTED = {"importlib", "gc", "ctypes", "_ctypes", "inspect", "functorch", "runpy", "pkgutil", "builtins",
                   "zipimport"}
_LOOKUPS = {"getattr", "setattr", "delattr", "hasattr", "vars", "globals", "locals"}
_ATTRIBUTE_CALLS = {"getattr", "setattr", "delattr", "hasattr"}  # with a constant name: read as `obj.name`
_ATTRGETTERS = {"attrgetter", "methodcaller", "operator.attrgetter", "operator.methodcaller"}
# PyTorch's tables of Python decompositions, backward formulas among them
_DECOMPOSITIONS = {"default_decompositions", "core_aten_decompositions", "get_decompositions",
                   "decomposition_table", "global_decomposition_table", "register_decomposition"}
# Tensor layouts with kernels of their own, which a lock on the dense kernels may not reach
_OTHER_LAYOUTS = {"nested", "to_mkldnn", "to_sparse", "to_sparse_csr", "to_sparse_coo", "_nested_tensor_from_tensor_list"}
# The library's own normalizations, forwards and their parts (F.batch_norm, torch._native_batch_norm_legit,
# batch_norm_elemt, nn.LazyInstanceNorm1d, ...): under finite differences a forward is a gradient not derived by hand
_LIBRARY_NORM = re.compile(r"_*(native_|cudnn_|miopen_|fused_)?(layer|batch|group|instance|rms)_norm(_\w+)?|"
                           r"(Lazy)?(Sync)?(Layer|Batch|Group|Instance|RMS)Norm(\dd)?|"
                           r"Transformer(Encoder|Decoder)?(Layer)?|norm\d")  # a Transformer's LayerNorms: .norm1
# Complex numbers: a complex step (f(x + ih).imag / h) differentiates the answer's own forward to rounding,
# with no derivation; no exercise has a use for them
_COMPLEX_DTYPES = {"complex", "complex32", "complex64", "complex128", "complex256", "cfloat", "cdouble", "chalf",
                   "csingle", "clongdouble", "complex_", "c8", "c16", "c32"}  # a string names only these
_COMPLEX = _COMPLEX_DTYPES | {"complexfloating", "view_as_complex", "view_as_real", "imag", "real", "polar", "emath",
                              "scimath",
                              "cmath", "conj", "conjugate", "angle",  # np.emath.sqrt(-1) is 1j by another name,
                              "fft", "roots", "eig", "eigvals"}  # and these return it (np.roots([1, 0, 1]))
# A dtype by its one-letter code, in a dtype's place only ("F" elsewhere is Fortran's order): complex, long double
_DTYPE_CODES = re.compile(r"[<>=|]?([FDGg]|f(12|16)|c(8|16|24|32))")
_COMPLEX_STEP_WHY = "a complex step differentiates numerically, not by hand"
_EXTENDED_WHY = "where finite differences reach float64's accuracy with no derivation"
# Arithmetic defined on a class of the answer's own: dual numbers or a tape, automatic differentiation by hand
_ARITHMETIC_DUNDERS = {"__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
                       "__rtruediv__", "__pow__", "__rpow__", "__neg__", "__matmul__", "__array_ufunc__",
                       "__array_function__", "__torch_function__", "__torch_dispatch__"}
_DUAL_WHY = "dual numbers or a tape differentiate the forward automatically, with no derivation"
# Symbolic and extended-precision arithmetic (sympy and mpmath come with torch): they differentiate a forward, or
# take finite differences of it to float64's accuracy, with no derivation; no exercise has a use for them
_PRECISION_MODULES = {"sympy", "mpmath", "decimal", "fractions", "gmpy2", "numdifftools", "findiff"}
# long double by its names, and np.typecodes, whose 'Float'[-1] is its code ("f16" counts in a dtype's place only)
_EXTENDED_FLOATS = {"longdouble", "float128", "float96", "longfloat", "clongfloat", "complex192", "typecodes"}
# Data turned back into code or objects: a red team's answer wrote a base64 payload out as a module and imported
# it (nothing of it in the cell), and one unpickled torch.jit.CompilationUnit by its name
_OPAQUE = {"pickle", "_pickle", "marshal", "base64", "binascii", "codecs", "zlib", "lzma", "bz2", "pydoc", "copyreg",
           "shelve", "dill", "cloudpickle", "zipimport"}
# Where Python imports from: a folder the answer wrote a module into
_IMPORT_PATHS = {("sys", "path"), ("sys", "meta_path"), ("sys", "path_hooks"), ("sys", "path_importer_cache")}
# Threads: torch's modes that hold a Triton launcher to allocating and copying are per thread (calling.kernel_work)
_THREADING = {"threading", "_thread"}


def dotted(node: ast.AST) -> str:
    """'a.b.c' for an attribute chain on a name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


# What a kernel writes its results with: one that calls none of these writes nothing (a red team's kernel was
# `pass`, launched once so that a launch was counted, while NumPy's dx went into the output through ctypes)
_KERNEL_WRITES = {"store", "atomic_add", "atomic_xchg", "atomic_cas", "atomic_max", "atomic_min", "atomic_and",
                  "atomic_or", "atomic_xor"}


def _kernels(tree: ast.AST) -> int:
    """Functions decorated with triton.jit (or jit, or triton.autotune/heuristics above one) that write
    something: a call to tl.store or an atomic in their body."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                if dotted(d) in ("triton.jit", "jit", "tl.jit", "triton.language.jit") and any(
                        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _KERNEL_WRITES
                        for n in ast.walk(node)):
                    count += 1
    return count


def _trusted(assignment: str) -> tuple[set[str], int, frozenset[str]]:
    """(modules the course's notebooks import, Triton kernels in its solution cells, the names those define)."""
    pair = notebooks(assignment)
    imports, kernels, own = set(), 0, set()
    for path in (pair.source, pair.release):
        for cell in read(path).cells:
            tree = parse(cell.source) if cell.cell_type == "code" else None
            if tree is not None:
                imports |= _imports(tree)
                if path == pair.source and nbgrader_meta(cell).get("solution"):
                    kernels += _kernels(tree)
                    own |= defined_names(cell.source)
    return imports, kernels, frozenset(own)


_DTYPE_TAKERS = {"dtype", "astype", "view", "finfo"}  # the calls whose argument is a dtype


def _negative(node: ast.AST) -> bool:
    """A negative number written as one: -1, -2.0."""
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
        and isinstance(node.operand.value, (int, float))


def _namespace_built(node: ast.AST) -> bool:
    """A class's namespace for type() whose names are not all written out: a comprehension, a dict with a key
    built at run time, or one made elsewhere (its hooks may be {f"__{k}__": f for ...})."""
    if isinstance(node, ast.Dict):
        return any(key is None or _assembled(key) for key in node.keys)
    return not isinstance(node, ast.Constant)


def _assembled(node: ast.AST) -> bool:
    """A string built at run time: 'a' + 'b', f-strings, ''.join(...), chr(...), s[::-1], a variable's value."""
    return not (isinstance(node, ast.Constant) and isinstance(node.value, str))


# PyTorch's Python decompositions and references: backward formulas the sandbox's lock does not seal
_DERIVED = ("torch._decomp", "torch._refs", "torch._prims")


def read_cell(source: str, own: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, what) for each suspicious thing in one cell's code.

    `own`: the names the course's solution defines (its functions and classes), which a string or a
    `.backward` may name without suspicion.
    """
    tree = parse(source)
    if tree is None:
        why = unreadable(source)
        return [(0, f"the cell is too deeply nested or too large for the grader to read ({why}), yet it ran: "
                    "nothing in it was checked")] if why else []
    found = []
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    # a course name that the cell binds to something else (`LayerNormFunction = loss`) is no longer the course's
    rebound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    rebound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    own_classes = own - rebound
    # names bound to a negative number (`m = -1.0`): one to a fractional power is complex, as -1.0 ** 0.5 is
    negatives = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _negative(node.value)
                 for t in node.targets if isinstance(t, ast.Name)}

    def flag(node, what):
        found.append((getattr(node, "lineno", 0), what))

    nodes = list(ast.walk(tree))
    for node in list(nodes):  # getattr(obj, "name") is obj.name: read it as that too
        if isinstance(node, ast.Call) and dotted(node.func) in _ATTRIBUTE_CALLS and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and node.args[1].value.isidentifier():
            nodes.append(ast.copy_location(ast.Attribute(value=node.args[0], attr=node.args[1].value,
                                                         ctx=ast.Load()), node))
        # `match m: case object(name=v)` looks up m.name; read it as that (nested patterns: on the subject too)
        elif isinstance(node, ast.Match):
            for pattern in (p for case in node.cases for p in ast.walk(case.pattern)):
                if isinstance(pattern, ast.MatchClass):
                    nodes.extend(ast.copy_location(ast.Attribute(value=node.subject, attr=name, ctx=ast.Load()),
                                                   pattern) for name in pattern.kwd_attrs)
    for node in nodes:
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            parts = name.split(".") if name else [node.attr]
            if name.startswith("torch.ops") or name.startswith("torch._C") or name.startswith("torch._ops") \
                    or (node.attr == "aten" or "aten" in parts):
                flag(node, f"reaches PyTorch's operators directly ({name or node.attr})")
            elif node.attr in _ENGINE:
                flag(node, f"reaches autograd's engine ({name or node.attr})")
            elif "autograd" in parts and parts[-1] in _AUTOGRAD:
                flag(node, f"asks autograd for a gradient ({name})")
            elif node.attr in _FORWARD_AD:
                flag(node, f"uses forward-mode automatic differentiation ({name or node.attr})")
            elif node.attr in ("grad_fn", "_grad_fn", "next_functions"):
                flag(node, f"reads autograd's graph ({node.attr})")
            elif node.attr == "backward" and not (isinstance(node.value, ast.Name)
                                                  and (node.value.id == "ctx" or node.value.id in own_classes)):
                flag(node, f"calls autograd's backward ({name or '.backward'})")
            elif len(parts) >= 2 and (parts[-2], parts[-1]) in _INTERNALS:
                flag(node, f"looks into the interpreter ({name})")
            elif len(parts) >= 2 and (parts[-2], parts[-1]) in _IMPORT_PATHS:
                flag(node, f"changes where Python imports from ({name}): a module the answer writes and imports "
                           "is no part of its cells")
            elif node.attr in _FILES:
                flag(node, f"reads or runs a module's files ({name or node.attr})")
            elif name == "torch.jit" or name.startswith("torch.jit.") or node.attr in _TORCHSCRIPT:
                flag(node, f"uses TorchScript, whose autodiff differentiates for the answer ({name or node.attr})")
            elif node.attr in _DUNDERS:
                flag(node, f"looks into the interpreter (.{node.attr})")
            elif name.startswith("torch.func") or name.startswith("functorch"):
                flag(node, f"uses automatic differentiation ({name})")
            elif name.startswith(_DERIVED):
                flag(node, f"uses PyTorch's own derivative formulas ({name})")
            elif node.attr in _AROUND_GUARDS | _RAW_MEMORY:
                flag(node, f"reaches around the grader's guards ({name or node.attr})")
            elif node.attr in _DECOMPOSITIONS:
                flag(node, f"uses PyTorch's own derivative formulas ({name or node.attr})")
            elif node.attr in _OTHER_LAYOUTS:
                flag(node, f"uses another tensor layout ({name or node.attr}), whose kernels the lock may not reach")
            elif _LIBRARY_NORM.fullmatch(node.attr) and node.attr not in own:
                flag(node, f"calls the library's own normalization ({name or node.attr}): the exercise asks "
                           "for it by hand")
            elif node.attr in _EXTENDED_FLOATS:
                flag(node, f"computes in extended precision ({name or node.attr}), {_EXTENDED_WHY}")
            elif node.attr in _COMPLEX:
                flag(node, f"computes with complex numbers ({name or node.attr}): {_COMPLEX_STEP_WHY}")
            elif node.attr in _ARITHMETIC_DUNDERS:
                flag(node, f"defines or calls arithmetic by its hook ({name or node.attr}): {_DUAL_WHY}")
        elif isinstance(node, ast.ClassDef) and (arithmetic := sorted(
                {f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
                & _ARITHMETIC_DUNDERS)):
            flag(node, f"defines arithmetic on a class of its own ({node.name}.{arithmetic[0]}): {_DUAL_WHY}")
        elif isinstance(node, ast.Name) and node.id in _COMPLEX and id(node) in called:
            flag(node, f"computes with complex numbers ({node.id}(...)): {_COMPLEX_STEP_WHY}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, complex):
            flag(node, f"computes with complex numbers ({node.value!r}): {_COMPLEX_STEP_WHY}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) \
                and (_negative(node.left) or isinstance(node.left, ast.Name) and node.left.id in negatives) \
                and isinstance(node.right, ast.Constant) and isinstance(node.right.value, float):
            flag(node, f"computes with complex numbers (a negative number to a fractional power is complex in "
                       f"Python): {_COMPLEX_STEP_WHY}")
        elif isinstance(node, ast.keyword) and node.arg in _ARITHMETIC_DUNDERS:  # type('D', (), dict(__mul__=f))
            flag(node.value, f"defines or calls arithmetic by its hook ({node.arg}=): {_DUAL_WHY}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type" \
                and len(node.args) == 3 and _namespace_built(node.args[2]):
            flag(node, f"makes a class whose names are built at run time (type(name, bases, namespace)): {_DUAL_WHY}")
        elif isinstance(node, ast.Name) and node.id in _RAW_MEMORY \
                or isinstance(node, ast.Constant) and node.value in _RAW_MEMORY \
                or isinstance(node, ast.keyword) and node.arg in _RAW_MEMORY:
            flag(node, "reaches around the grader's guards (an array over a raw address: "
                       f"{getattr(node, 'id', None) or getattr(node, 'arg', None) or node.value})")
        elif isinstance(node, ast.Name) and node.id in _DUNDERS | _FILES:
            flag(node, f"uses {node.id}")
        elif isinstance(node, ast.Name) and node.id in _LOOKUPS | _DYNAMIC and id(node) not in called:
            flag(node, f"passes {node.id} around under another name, which hides what it looks up")
        elif isinstance(node, ast.Name) and node.id in _ENGINE:
            flag(node, f"reaches autograd's engine ({node.id})")
        elif isinstance(node, ast.Name) and node.id in _FORWARD_AD:
            flag(node, f"uses forward-mode automatic differentiation ({node.id})")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in modules:
                if m.split(".")[0] in _NEVER_IMPORTED \
                        or m.startswith("torch._") or m in ("torch.ops", "torch.func", "torch.jit") \
                        or m.startswith(("torch.func.", "torch.ops.")) \
                        or (m.startswith("torch.autograd.") and m != _AUTOGRAD_ALLOWED
                            and not m.startswith(_AUTOGRAD_ALLOWED + ".")):
                    flag(node, f"imports {m}")
                elif "autograd" in m.split(".")[1:] and not m.startswith("torch.autograd"):  # torch.distributed's
                    flag(node, f"imports {m}")
                elif m.split(".")[0] in _INSIDE and not (isinstance(node, ast.ImportFrom) and node.level):
                    flag(node, f"imports the grader's own module {m}")
                elif m.startswith("triton.runtime.interpreter") or (
                        m == "triton.runtime" and any(a.name == "interpreter" for a in node.names)):
                    flag(node, "imports Triton's interpreter, whose loads and stores the grader checks")
                elif m.split(".")[0] in _SPAWNING_MODULES:
                    flag(node, f"imports {m}, which starts other processes (their PyTorch is not locked)")
                elif m.split(".")[0] == "cmath":
                    flag(node, f"imports {m}, for complex numbers: {_COMPLEX_STEP_WHY}")
                elif m.split(".")[0] in _PRECISION_MODULES:
                    flag(node, f"imports {m}: symbolic or extended-precision arithmetic differentiates a forward "
                               "(or takes its finite differences to float64's accuracy) with no derivation")
                elif m.split(".")[0] in _OPAQUE:
                    flag(node, f"imports {m}, which rebuilds code or objects from data no review reads (a module "
                               "written out and imported, a callable unpickled by its name)")
                elif m.split(".")[0] in _THREADING:
                    flag(node, f"imports {m}, which runs code in other threads (a Triton launcher's guard holds "
                               "per thread)")
                elif m == "torch.overrides" or any(part.startswith("_") for part in m.split(".")[1:]) \
                        and m.split(".")[0] == "torch":
                    flag(node, f"imports {m}, which reaches around the grader's guards")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.autograd"):
                names = {a.name for a in node.names}
                if names & _AUTOGRAD:
                    flag(node, f"imports {', '.join(sorted(names & _AUTOGRAD))} from {node.module}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and not node.level:
                names = {a.name for a in node.names} & {"func", "_C", "ops", "_functorch", "jit"}
                if names:
                    flag(node, f"imports {', '.join(sorted(names))} from torch")
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names if a.name in _AROUND_GUARDS | _FILES | _TORCHSCRIPT
                         | _NEVER_IMPORTED | _COMPLEX | _EXTENDED_FLOATS or _LIBRARY_NORM.fullmatch(a.name)}
                if names:
                    flag(node, f"imports {', '.join(sorted(names))} from {node.module or '.'}")
        elif isinstance(node, ast.Call):
            fn = dotted(node.func)
            if fn in _DYNAMIC or fn.endswith("import_module"):
                flag(node, f"runs code or imports by a computed name ({fn})")
            elif fn in _LOOKUPS and len(node.args) >= 2 and _assembled(node.args[1]):
                flag(node, f"looks up an attribute by a computed name ({fn})")
            elif fn in ("globals", "locals", "vars"):
                flag(node, f"reads a namespace ({fn}())")
            elif fn in _ATTRGETTERS:
                flag(node, f"looks up attributes by name ({fn})")
            elif _SPAWNING_CALLS.fullmatch(fn):
                flag(node, f"starts another process ({fn}): its PyTorch is not locked")
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            codes = [a.value for a in [*(node.args if callee in _DTYPE_TAKERS else []),
                                       *(k.value for k in node.keywords if k.arg == "dtype")]
                     if isinstance(a, ast.Constant) and isinstance(a.value, str) and _DTYPE_CODES.fullmatch(a.value)]
            for code in codes:
                if code.lstrip("<>=|") in ("g", "f12", "f16"):
                    flag(node, f"computes in extended precision ({code!r}), {_EXTENDED_WHY}")
                else:
                    flag(node, f"computes with complex numbers ({code!r}): {_COMPLEX_STEP_WHY}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200:
            if node.value in own:
                continue
            if re.fullmatch(r"[\w.]+", node.value) and _BACKWARD_OP.search(node.value) \
                    and ("backward" in node.value or "aten" in node.value):
                flag(node, f"names a PyTorch operator in a string ({node.value!r})")
            elif node.value in _ENGINE | _FORWARD_AD | _TORCHSCRIPT | _FILES:
                flag(node, f"names autograd's or TorchScript's insides in a string ({node.value!r})")
            elif node.value in _EXTENDED_FLOATS:
                flag(node, f"computes in extended precision ({node.value!r}), {_EXTENDED_WHY}")
            elif node.value in _ARITHMETIC_DUNDERS:  # type('D', (), {'__mul__': f}), setattr(D, '__mul__', f)
                flag(node, f"defines or calls arithmetic by its hook ({node.value!r}): {_DUAL_WHY}")
            elif node.value in _COMPLEX_DTYPES:
                flag(node, f"computes with complex numbers ({node.value!r}): {_COMPLEX_STEP_WHY}")
            elif re.search(r"(site|dist)-packages", node.value) or (re.search(r"[/\\]torch[/\\]", node.value)
                                                                    and "://" not in node.value):  # not a link
                flag(node, f"names a path into the installed packages ({node.value[:60]!r})")
    return found


def read_submission(assignment: str, picked) -> list[str]:
    """The flags of a submission's picked cells (`Picked`s, in the order they ran), one line each."""
    imports, kernels, own = _trusted(assignment)
    flags, copies, their_imports, their_kernels = [], [], set(), 0
    for p in picked:
        for line, what in read_cell(p.source, own):
            flags.append(f"cell {p.label!r} line {line}: {what}")
        copies += [(p.label, *found) for found in copied(p.source)]
        tree = parse(p.source)
        if tree is not None:
            their_imports |= _imports(tree)
            their_kernels += _kernels(tree)
    flags += flag_copies(copies)
    for module in sorted((their_imports & FRAMEWORKS) - imports):
        flags.append(f"imports {module}, which this exercise's own solution does not use")
    if kernels and not their_kernels:
        flags.append(NO_KERNEL)  # grade() keeps it only when some test passed
    return list(dict.fromkeys(flags))
