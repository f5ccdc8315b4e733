"""Airflow plugins shipped with the provider (the LiangXin callback receiver)."""
