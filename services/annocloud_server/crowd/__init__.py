"""Crowd quality: label aggregation, geometry fusion, agreement, dynamic overlap and forecasts."""
