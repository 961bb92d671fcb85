"""The topology's one exception, in a module of its own so that every part can raise it."""


class TopologyError(RuntimeError):
    """A part of the topology did not start, answer or stop; the message says which, with the end
    of its log when it has one."""
