"""Exports of accepted labels (COCO, Pascal VOC, YOLO, JSONL) as background jobs writing zip artifacts."""
