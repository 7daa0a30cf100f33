"""mailstack: move an organisation's mail to a new mail host on AWS, safely."""

__version__ = "0.1.0"
