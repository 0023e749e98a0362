"""Airflow plugin: the batch-ai review queue as a page of the Airflow UI.

The API server mounts the FastAPI app of :mod:`batch_ai.review_app` at ``/batch-ai``, and
the UI shows it in its navigation as "Review".
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from batch_ai.review_app import PREFIX, app


class BatchAIReviewPlugin(AirflowPlugin):
    name = "batch_ai_review"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "batch-ai review queue"}]
    external_views = [
        {
            "name": "Review",
            "href": f"{PREFIX}/review",
            "url_route": "batch-ai-review",
            "icon": f"{PREFIX}/icon.svg",
            "destination": "nav",
        },
    ]
