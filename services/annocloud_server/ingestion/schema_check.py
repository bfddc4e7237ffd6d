"""Imported labels against the target project's label schema: names and geometry kinds.

Geometry itself (finite numbers, inside the image, polygons of 3+ points) is checked by the formats
library against the size the source declares; this only asks whether the project can hold the
labels: every class is a class of the schema, every region's label is an object of the schema of
the same kind (box, polygon, keypoints, span), and keypoints come in the schema's number. Attributes
and the classification mode are not checked: imports become predictions, which a human corrects.
"""

from __future__ import annotations

from annocloud.annotations.v1 import annotations_pb2
from annocloud.tasks.v1 import tasks_pb2

from annocloud_server.formats.model import RowError

KIND_OF_GEOMETRY = {
    "box": tasks_pb2.OBJECT_KIND_BOX,
    "polygon": tasks_pb2.OBJECT_KIND_POLYGON,
    "keypoints": tasks_pb2.OBJECT_KIND_KEYPOINTS,
    "span": tasks_pb2.OBJECT_KIND_TEXT_SPAN,
}
GEOMETRY_OF_KIND = {kind: geometry for geometry, kind in KIND_OF_GEOMETRY.items()}


def schema_errors(
    labels: annotations_pb2.Labels, schema: tasks_pb2.LabelSchema, *, where: str
) -> list[RowError]:
    """One error per class or region of ``labels`` that ``schema`` cannot hold (empty when all fit)."""
    errors: list[RowError] = []
    classes = {c.name for c in schema.classes}
    objects = {o.name: o for o in schema.objects}
    version = f"schema version {schema.version}"
    for index, name in enumerate(labels.classes):
        if name not in classes:
            errors.append(
                RowError(
                    f"{where}: classes[{index}]",
                    "UNKNOWN_LABEL",
                    f"class {name!r} is not a class of the project's {version}",
                )
            )
    for index, region in enumerate(labels.regions):
        spot = f"{where}: regions[{index}]"
        label = objects.get(region.label)
        if label is None:
            errors.append(
                RowError(spot, "UNKNOWN_LABEL", f"label {region.label!r} is not an object of the {version}")
            )
            continue
        geometry = region.WhichOneof("geometry") or "no geometry"
        if KIND_OF_GEOMETRY.get(geometry) != label.kind:
            wanted = GEOMETRY_OF_KIND.get(label.kind, tasks_pb2.ObjectKind.Name(label.kind))
            errors.append(
                RowError(
                    spot,
                    "LABEL_KIND_MISMATCH",
                    f"label {label.name!r} is a {wanted} in the {version}, the source has a {geometry}",
                )
            )
            continue
        points = len(region.keypoints.points)
        if geometry == "keypoints" and label.keypoint_names and points != len(label.keypoint_names):
            errors.append(
                RowError(
                    spot,
                    "KEYPOINT_COUNT_MISMATCH",
                    f"label {label.name!r} has {len(label.keypoint_names)} keypoints in the {version}, "
                    f"the source has {points}",
                )
            )
    return errors
