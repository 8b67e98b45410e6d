"""The one atomic operation of the kernels: fetch-and-add on an element of an int64 array.

Dimension legend: none (a counter). Reference: the Python twin ``fetch_add`` below; tests:
tests/test_kernels.py (the drivers that take tasks through it, any thread count).

The parallel drivers hand out tasks to their workers as the workers ask for them
(mlp/maml_kernels.py ``next_task``). Two threads may ask at the same moment, so reading the
counter and increasing it must be one indivisible step, or both would get the same task:

    old = a[i];  a[i] = old + v;  return old          (atomically: LLVM ``atomicrmw add``,
                                                       sequentially consistent; x86 ``lock xadd``)

Numba has no atomic operations on the CPU, so this is an ``@intrinsic`` emitting that
instruction. In Python (a kernel's ``py_func``, or ``NUMBA_DISABLE_JIT=1``) the twin below
runs: there ``prange`` is a plain loop on one thread, so a read and a write suffice.
"""
from numba.core import types
from numba.extending import intrinsic, overload


@intrinsic
def _atomic_fetch_add(typingctx, arr, i, v):
    """LLVM ``atomicrmw add`` on &arr[i] (an int64 array), returning the old value."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, i, v)

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", builder.gep(a.data, [index]), value, "seq_cst")
    return sig, codegen


def fetch_add(a, i, v):
    """a[i] += v, returning the old a[i] (Python twin: one thread, no atomicity needed)."""
    old = a[i]
    a[i] = old + v
    return old


@overload(fetch_add)
def _fetch_add_compiled(a, i, v):
    def impl(a, i, v):
        return _atomic_fetch_add(a, i, v)
    return impl
