"""What every part of the product shares and nothing else: the wire contract between the API and
the inference servers (`wire`), BMW's formats (`bmw`), image decoding (`images`), HTTP body
limits (`http`), box arithmetic (`boxes`) and atomic files (`files`). It imports nothing of the
packages above it."""
