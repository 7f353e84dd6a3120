"""Eventlet monkey patching for every process entry point (services, CLI,
benchmarks, tests): must run before anything else imports sockets or threads.

`dump_on_signal()` makes `kill -USR1 <pid>` write every green thread's stack (and
the state of every nameko queue consumer) to `$TMPDIR/green-threads-<pid>.txt`:
a process stuck in a green thread shows nothing to py-spy or a thread dump."""
import os
import warnings


def patch() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation notice (INFRA.md)
        import eventlet

    eventlet.monkey_patch()


def dump_on_signal(on_dump=None) -> None:
    import signal

    def dump(*_):
        path = dump_green_threads()
        if on_dump is not None:
            on_dump(path)

    signal.signal(signal.SIGUSR1, dump)


def dump_green_threads() -> str:
    """Every live green thread's stack and every queue consumer's state, to a file
    named by this process; returns its path."""
    import gc
    import tempfile
    import traceback

    import greenlet
    from nameko.messaging import QueueConsumer

    path = os.path.join(tempfile.gettempdir(), f"green-threads-{os.getpid()}.txt")
    with open(path, "w") as out:
        for thing in list(gc.get_objects()):
            try:
                if isinstance(thing, greenlet.greenlet) and thing.gr_frame is not None:
                    print(f"--- green thread {thing!r}", file=out)
                    traceback.print_stack(thing.gr_frame, file=out)
                elif isinstance(thing, QueueConsumer) and getattr(thing, "container", None):
                    thread = thing._gt
                    print(f"--- {type(thing).__name__} of {thing.container.service_name}: thread "
                          f"{'none' if thread is None else 'dead' if thread.dead else 'alive'}, "
                          f"should_stop {thing.should_stop}, consumers {len(thing._consumers)}, "
                          f"providers {thing._providers}, pending removal "
                          f"{list(thing._pending_remove_providers)}", file=out)
            except Exception as exc:  # a half-built object: say so and go on
                print(f"--- {type(thing).__name__}: {exc!r}", file=out)
    return path
