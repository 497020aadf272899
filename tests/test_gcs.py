"""The bucket as a Cloud TPU run sees it: TensorFlow's own gs:// file system against a
local Google Cloud Storage (tests/gcs_rig.py), with faults on demand and its traffic
counted.
"""

import os

from wss import files


def test_files_round_trip_through_tensorflows_gs_file_system(gcs):
    root = gcs.root
    mark = gcs.rig.mark()
    with gcs.rig.environ():
        files.write_text(f"{root}/a/b/x.txt", "hello")
        files.write_json(f"{root}/a/y.json", {"k": 1})
        assert files.read_text(f"{root}/a/b/x.txt") == "hello"
        assert files.read_json(f"{root}/a/y.json") == {"k": 1}
        assert files.listdir(f"{root}/a") == ["b", "y.json"]
        assert files.isdir(f"{root}/a/b") and files.isfile(f"{root}/a/y.json")
        files.rename(f"{root}/a/b/x.txt", f"{root}/a/z.txt")
        assert files.glob(f"{root}/a/*.txt") == [f"{root}/a/z.txt"]
        assert not files.exists(f"{root}/a/b/x.txt")
        files.remove(f"{root}/a/z.txt")
        assert files.glob(f"{root}/a/*.txt") == []
        assert files.size(f"{root}/a/y.json") == len('{\n  "k": 1\n}\n')
    seen = gcs.rig.since(mark)
    # It went over the wire: each file uploaded once under its temporary name, then
    # renamed by a server-side copy (GCS has no rename).
    folder = root.split("/", 3)[3]
    uploaded = sorted(r.object for r in seen if r.upload and r.sent)
    assert uploaded == [
        f"{folder}/a/.y.json.tmp-{os.getpid()}",
        f"{folder}/a/b/.x.txt.tmp-{os.getpid()}",
    ]
    assert any("/rewriteTo/" in r.object for r in seen)
    assert all(r.status in (200, 204, 206, 404) for r in seen)
