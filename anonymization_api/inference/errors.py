"""What a protocol client reports to the router, before the router decides what the user hears.

`Unreachable` (no connection; worth a retry and another replica), `NoAnswer` (no answer in time;
another replica, not the same one again) and `BrokenContract` (an answer of the wrong shape: the
server is not believed again until re-discovery, another replica is asked) are the router's to
handle; an answer that is an error is final for the request (`InferenceError`)."""


class Unreachable(Exception):
    pass


class NoAnswer(Exception):
    pass


class BrokenContract(Exception):
    pass
