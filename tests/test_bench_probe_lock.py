"""`python -m bench.probes write-lock` reads the write lock's use from `perf script`."""

from __future__ import annotations

import pytest

from bench.probe_lock import lock_use

# Thread 11 (writer fd 7) waits 1 ms for the lock and holds it 2 ms; thread 22 (writer fd 9)
# takes it at once and holds it 1 ms; a flock on another descriptor (the store's `.lock`)
# and a thread of no gateway process are left out.
SCRIPT = """\
python 11 [000] 100.000000: syscalls:sys_enter_flock: fd: 0x00000007, cmd: 0x00000002
python 22 [001] 100.000100: syscalls:sys_enter_flock: fd: 0x00000003, cmd: 0x00000006
python 22 [001] 100.000110:  syscalls:sys_exit_flock: 0x0
python 11 [000] 100.001000:  syscalls:sys_exit_flock: 0x0
python 11 [000] 100.003000: syscalls:sys_enter_flock: fd: 0x00000007, cmd: 0x00000008
python 11 [000] 100.003010:  syscalls:sys_exit_flock: 0x0
python 22 [001] 100.003020: syscalls:sys_enter_flock: fd: 0x00000009, cmd: 0x00000002
python 22 [001] 100.003030:  syscalls:sys_exit_flock: 0x0
python 33 [001] 100.003040: syscalls:sys_enter_flock: fd: 0x00000009, cmd: 0x00000002
python 22 [001] 100.004030: syscalls:sys_enter_flock: fd: 0x00000009, cmd: 0x00000008
python 22 [001] 100.004040:  syscalls:sys_exit_flock: 0x0
"""


def test_the_lock_is_timed_per_thread_from_its_flock_calls() -> None:
    uses = lock_use(SCRIPT.splitlines(), {11: 7, 22: 9})
    assert uses.keys() == {11, 22}
    assert uses[11].transactions == uses[22].transactions == 1
    assert uses[11].waited == pytest.approx(0.001)
    assert uses[11].held == pytest.approx(0.002)
    assert uses[22].waited == pytest.approx(0.00001)
    assert uses[22].held == pytest.approx(0.001)
