"""Every test process runs under eventlet, as the services do."""
from shared.green import patch

patch()

from kombu.mixins import ConsumerMixin  # noqa: E402

# Consumers notice a stop request once per drain timeout (1 s by default);
# a tenth of that keeps each in-process container's teardown short.
ConsumerMixin.consume.__defaults__ = (None, None, 0.1)

pytest_plugins = ["tools.testing"]
