"""What both inference servers share: model files, the OpenVINO engine, image decoding, and the
Open Inference Protocol / BMW server that puts any `ServedModel` behind HTTP."""
