"""Every test process runs under eventlet, as the services do."""
import eventlet

eventlet.monkey_patch()

pytest_plugins = ["shared.testing"]
