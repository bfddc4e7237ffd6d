"""Pure export logic: stems, geometry and schema views."""

from __future__ import annotations

from annocloud.tasks.v1 import tasks_pb2
from annocloud_server.export.domain import StemAllocator, schema_view, split_file_name, truthy
from annocloud_server.formats.geometry import keypoints_bbox, keypoints_flat, polygon_area, polygon_bbox
from export_samples import keypoints, polygon, sample_schema


def test_split_file_name_sanitises_and_drops_directories() -> None:
    """Directories, unsafe characters and leading dots never reach a stem."""
    assert split_file_name("a/b/c d?.jpg", "x") == ("c_d_", ".jpg")
    assert split_file_name("..\\..\\evil.png", "x") == ("evil", ".png")
    assert split_file_name("...", "item9") == ("item9", "")
    assert split_file_name("", "item9") == ("item9", "")
    assert split_file_name("héllo.tar.gz", "x") == ("h_llo.tar", ".gz")


def test_stem_allocator_prefixes_collisions_with_item_id() -> None:
    """A taken stem (case-insensitively) gets the item id as prefix, then a counter."""
    stems = StemAllocator()
    assert stems.allocate("cat.jpg", "a1") == ("cat", ".jpg")
    assert stems.allocate("CAT.png", "b2") == ("b2_CAT", ".png")
    assert stems.allocate("b2_cat.jpg", "c3") == ("c3_b2_cat", ".jpg")
    assert stems.allocate("cat.jpg", "b2") == ("b2_cat-2", ".jpg")


def test_polygon_bounds_and_shoelace_area() -> None:
    """A right triangle of legs 4 and 3 has area 6 and bounds [1, 1, 4, 3]."""
    region = polygon("road", (1, 1), (5, 1), (1, 4))
    assert polygon_area(region.polygon) == 6.0
    assert polygon_bbox(region.polygon) == [1, 1, 4, 3]


def test_keypoints_zero_unlabelled_and_bound_labelled() -> None:
    """v=0 points are written 0,0,0 and do not count or widen the box."""
    region = keypoints("person", (10, 20, 1), (99, 99, 0), (30, 25, 2))
    flat, labelled = keypoints_flat(region.keypoints)
    assert flat == [10, 20, 1, 0, 0, 0, 30, 25, 2]
    assert labelled == 2
    assert keypoints_bbox(region.keypoints) == [10, 20, 20, 5]
    assert keypoints_bbox(keypoints("p", (1, 1, 0)).keypoints) == [0.0, 0.0, 0.0, 0.0]


def test_schema_view_ids() -> None:
    """COCO ids 1.. over box/polygon/keypoint labels in order; box ids 0.. over boxes only."""
    view = schema_view(sample_schema())
    assert {n: c.id for n, c in view.coco.items()} == {"car": 1, "road": 2, "person": 3, "sign": 4}
    assert {n: c.id for n, c in view.boxes.items()} == {"car": 0, "sign": 1}
    assert view.version == 2
    assert view.coco["person"].kind == tasks_pb2.OBJECT_KIND_KEYPOINTS
    assert schema_view(None).coco == {}


def test_truthy_attribute_values() -> None:
    """Only yes-like strings mark an object occluded."""
    values = ("TRUE", "1", " yes ", "false", "", "0")
    assert [truthy(v) for v in values] == [True, True, True, False, False, False]
