"""Runs public_data/split.py for pipeline.py, which still calls `python -m data.split`;
delete this file when pipeline.py calls `python -m public_data.split`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("public_data.split", run_name="__main__", alter_sys=True)
