"""Tools that talk to the service or run it, none of them part of it: the `anonymizer` command
(`cli`), the stack supervisor (`stack`, `processes`), batch runs (`batch`), the privacy-quality
evaluator (`evaluation`) and the Triton repository command (`triton_repo`)."""
