"""Hand-made schemas and accepted items shared by the export unit tests."""

from __future__ import annotations

import io
import zipfile

from annocloud.annotations.v1 import annotations_pb2 as ann
from annocloud.common.v1 import common_pb2
from annocloud.export.v1 import export_pb2
from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.export.domain import ExportItem, schema_view
from annocloud_server.export.formats import write_artifact
from annocloud_server.export.sink import ArtifactInfo, ExportResult


def sample_schema(version: int = 2) -> tasks_pb2.LabelSchema:
    return tasks_pb2.LabelSchema(
        name=f"projects/p1/schemas/{version}",
        version=version,
        classification_mode=tasks_pb2.CLASSIFICATION_MODE_SINGLE,
        classes=[tasks_pb2.ClassLabel(name="day"), tasks_pb2.ClassLabel(name="night")],
        objects=[
            tasks_pb2.ObjectLabel(name="car", kind=tasks_pb2.OBJECT_KIND_BOX),
            tasks_pb2.ObjectLabel(name="road", kind=tasks_pb2.OBJECT_KIND_POLYGON),
            tasks_pb2.ObjectLabel(
                name="person", kind=tasks_pb2.OBJECT_KIND_KEYPOINTS, keypoint_names=["head", "foot"]
            ),
            tasks_pb2.ObjectLabel(name="entity", kind=tasks_pb2.OBJECT_KIND_TEXT_SPAN),
            tasks_pb2.ObjectLabel(name="sign", kind=tasks_pb2.OBJECT_KIND_BOX),
        ],
    )


def box(label: str, x: float, y: float, w: float, h: float, **attributes: str) -> ann.Region:
    return ann.Region(label=label, box=ann.Box(x=x, y=y, width=w, height=h), attributes=attributes)


def polygon(label: str, *points: tuple[float, float]) -> ann.Region:
    return ann.Region(label=label, polygon=ann.Polygon(points=[ann.Point(x=x, y=y) for x, y in points]))


def keypoints(label: str, *points: tuple[float, float, int]) -> ann.Region:
    return ann.Region(
        label=label,
        keypoints=ann.Keypoints(points=[ann.Keypoint(x=x, y=y, visibility=v) for x, y, v in points]),
    )


def image_item(
    item_id: str, file_name: str, regions: list[ann.Region], *, width: int = 200, height: int = 100
) -> ExportItem:
    return ExportItem(
        item=f"datasets/d1/items/{item_id}",
        item_id=item_id,
        media_type=common_pb2.MEDIA_TYPE_IMAGE,
        file_name=file_name,
        width=width,
        height=height,
        text="",
        labels=ann.Labels(classes=["day"], regions=regions),
        agreement=0.9,
        vote_count=3,
        schema_version=2,
        accepted_by="auto",
        accept_time="2024-05-01T10:00:00Z",
    )


def text_item(item_id: str, text: str) -> ExportItem:
    return ExportItem(
        item=f"datasets/d1/items/{item_id}",
        item_id=item_id,
        media_type=common_pb2.MEDIA_TYPE_TEXT,
        file_name=f"{item_id}.txt",
        width=0,
        height=0,
        text=text,
        labels=ann.Labels(
            not_sure=True, regions=[ann.Region(label="entity", span=ann.TextSpan(start=0, end=4))]
        ),
        agreement=1.0,
        vote_count=2,
        schema_version=2,
        accepted_by="user:rev",
    )


def sample_items() -> list[ExportItem]:
    return [
        image_item(
            "i1",
            "street.jpg",
            [
                box("car", 10.5, 20.25, 30.0, 40.0, occluded="true", color="red"),
                polygon("road", (0, 0), (100, 0), (100, 50), (0, 50)),
                keypoints("person", (5.0, 6.0, 2), (7.0, 9.0, 0)),
                box("ghost", 1, 1, 1, 1),
            ],
        ),
        image_item("i2", "dir/street.JPG", [box("sign", 0, 0, 200, 100)]),
        image_item("i3", "empty one!.png", []),
        text_item("t1", "Paris is big"),
    ]


def export(
    fmt: int, items: list[ExportItem], schema: tasks_pb2.LabelSchema | None = None
) -> tuple[zipfile.ZipFile, ExportResult]:
    buffer = io.BytesIO()
    info = ArtifactInfo(
        format=fmt,
        project="projects/p1",
        export="projects/p1/exports/e1",
        created_time="2024-05-01T00:00:00Z",
    )
    result = write_artifact(
        buffer, iter(items), info=info, schema=schema_view(schema if schema is not None else sample_schema())
    )
    buffer.seek(0)
    return zipfile.ZipFile(buffer), result


FORMATS = (
    export_pb2.EXPORT_FORMAT_COCO,
    export_pb2.EXPORT_FORMAT_PASCAL_VOC,
    export_pb2.EXPORT_FORMAT_YOLO,
    export_pb2.EXPORT_FORMAT_JSONL,
    export_pb2.EXPORT_FORMAT_CVAT,
    export_pb2.EXPORT_FORMAT_LABEL_STUDIO,
    export_pb2.EXPORT_FORMAT_CSV,
    export_pb2.EXPORT_FORMAT_YOLO_SEGMENTATION,
)
