"""Triton's extensions beyond the protocol's core: the model configuration and repository index
(which name a server's models with their task and labels, see `anonymizer_shared.wire`) and
the statistics (request counts)."""

from typing import Any

from fastapi import APIRouter, Request

from inference_common.server.runners import runner_of, runners

metadata = APIRouter()
statistics = APIRouter()


@metadata.get("/v2/models/{name}/config")
@metadata.get("/v2/models/{name}/versions/{version}/config")
async def model_config(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    return runner_of(request, name).model.triton_config(request.app.state.settings.max_batch_size)


@metadata.post("/v2/repository/index")
async def repository_index(request: Request) -> list[dict[str, str]]:
    return [{"name": name, "version": "1", "state": "READY"} for name in runners(request)]


@statistics.get("/v2/models/{name}/stats")
async def model_statistics(request: Request, name: str) -> dict[str, Any]:
    """Triton's statistics extension, the counts only."""
    runner = runner_of(request, name)
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "inference_count": runner.images,
                "execution_count": runner.requests,
                "inference_stats": {"success": {"count": runner.requests}},
            }
        ]
    }
