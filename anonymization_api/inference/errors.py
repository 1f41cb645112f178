"""What a protocol client reports to the router, before the router decides what the user hears.

`Unreachable` (no connection; worth a retry and another replica) and `NoAnswer` (no answer in
time; another replica, not the same one again) are the router's to handle; an answer that is an
error or breaks the contract is final for the request (`InferenceError`)."""


class Unreachable(Exception):
    pass


class NoAnswer(Exception):
    pass
