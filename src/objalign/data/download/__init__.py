"""Download COCO 2017: resumable, verified, atomically extracted, skipped when already there.

:func:`download_coco2017` fetches the official archives (or a mirror's copies) with the standard library
only (:mod:`urllib`), so downloading adds no dependency. The layout it produces is the one COCO ships::

    root/
      annotations/instances_train2017.json   (and the other json files of annotations_trainval2017.zip)
      annotations/instances_val2017.json
      train2017/000000000009.jpg ...
      val2017/000000000139.jpg ...
      downloads/train2017.zip                (archives; kept unless ``keep_archives=False``)
      downloads/train2017.zip.verified.json  (size and md5 recorded after verification)

Guarantees
----------
* **Resume.** Bytes arrive in ``downloads/<archive>.part``; an interrupted transfer (dropped connection,
  Ctrl-C, crash) continues from the bytes already there with an HTTP ``Range`` request (and ``If-Range`` on
  the server's ETag, so a changed remote file restarts from zero). A server that ignores ``Range`` (status 200)
  restarts from zero; a 416 answer means the part is already whole (or bigger than the file: restart).
  Dropped connections are retried ``retries`` times, each retry resuming.
* **Verify.** The size must equal the server's ``Content-Length`` / ``Content-Range`` total; archives named in
  the checksum table (the official md5 and size by default) must match it; and every archive must be a
  readable zip whose central directory fits in the file and whose sample of members passes its CRC-32
  (extraction then checks the CRC of every member). An archive that fails is **moved aside** to
  ``downloads/<archive>.corrupt`` (replacing an older one; delete it once inspected) and the error says so,
  so the next run downloads it afresh.
* **Atomic extraction.** An archive is extracted into a temporary folder next to the target
  (``root/.<archive>.extract-*``); a completion marker (:data:`MARKER`, recording the archive's name, size and
  md5) is written inside it and only then is the folder moved into place with :func:`os.replace`. A crash
  leaves a temporary folder (removed by the next run) and never a target folder that looks complete.
* **Skip.** Annotation files that exist, an image folder that holds a marker or any ``*.jpg`` (a local copy
  laid out as COCO ships it is used as is), and an archive with a matching ``.verified.json`` record are not
  fetched again: a second run makes no network request for finished parts.
* **Clear errors.** A 404, an HTML page instead of a zip, a full disk, a failed check or a refused
  connection raise :class:`DownloadError` (a :class:`ValueError`) with one line naming the URL or file and the
  fix. Nothing already downloaded is lost: the ``.part`` file stays for the next run to resume.

Two processes downloading into the same ``root`` at the same time are not supported.
"""


from __future__ import annotations

from objalign.data.download.archives import verify_archive
from objalign.data.download.coco2017 import download_coco2017
from objalign.data.download.common import (
    COCO2017_CHECKSUMS,
    DEFAULT_BASE_URL,
    MARKER,
    REPACKED_HINT,  # noqa: F401 - importable here as before the split, though not in __all__
    DownloadError,
)

__all__ = [
    "COCO2017_CHECKSUMS",
    "DEFAULT_BASE_URL",
    "MARKER",
    "DownloadError",
    "download_coco2017",
    "verify_archive",
]
