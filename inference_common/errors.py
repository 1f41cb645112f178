"""Errors of the inference servers, each carrying its HTTP status (images that cannot be decoded
raise `anonymizer_shared.images.ImageError`, which carries its own).

InferenceServerError          500
 ├── BadRequest               400  (wrong tensor name, shape, datatype, parameter)
 ├── UnknownModel             404
 ├── PayloadTooLarge          413
 ├── ModelNotReady            503
 └── ModelFetchError          503  (a model file could not be fetched or failed its checksum)
"""


class InferenceServerError(Exception):
    status_code = 500


class BadRequest(InferenceServerError):
    status_code = 400


class UnknownModel(InferenceServerError):
    status_code = 404


class PayloadTooLarge(InferenceServerError):
    status_code = 413


class ModelNotReady(InferenceServerError):
    status_code = 503


class ModelFetchError(InferenceServerError):
    status_code = 503
