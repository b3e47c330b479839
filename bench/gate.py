"""Run a contender between two pauses, so that its CPU meter brackets its messages and nothing else.

    python -m bench.gate bench.contenders.plain_relay --amqp-url ... --queue ... --count N

Imports the contender's module, prints :data:`READY` and waits for :data:`GO`; then runs the
module's ``main()`` with the arguments that follow its name, prints :data:`DONE` and waits for
:data:`GO` again before it exits. bench.run samples the contender's CPU time at each pause
(``CpuMeter``): what it spends loading its libraries, and at exit tearing the interpreter down,
takes more CPU than a relay spends on a few hundred messages, and is no part of relaying.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: The line a gated contender prints once it waits to start.
READY = "bench.gate: ready"
#: The line it prints once its ``main()`` returned, waiting to exit.
DONE = "bench.gate: done"
#: The go, each time: bench.run sends it once it has sampled the contender's CPU time.
GO = signal.SIGUSR1


def main() -> None:
    module_name, *args = sys.argv[1:]
    # Blocked from the start (and left so): a go sent before the contender waits for it stays
    # pending instead of ending the process (SIGUSR1's default action).
    signal.pthread_sigmask(signal.SIG_BLOCK, {GO})
    module = importlib.import_module(module_name)
    print(READY, flush=True)
    signal.sigwait({GO})
    sys.argv = [module_name, *args]
    module.main()
    print(DONE, flush=True)
    signal.sigwait({GO})


if __name__ == "__main__":
    main()
