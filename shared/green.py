"""Eventlet monkey patching for every process entry point (services, CLI,
benchmarks, tests): must run before anything else imports sockets or threads."""
import warnings


def patch() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation notice (INFRA.md)
        import eventlet

    eventlet.monkey_patch()
