"""A local web app for predictions: upload an image, see the panoptic overlay, the depth map, the
segment list and an interactive 3D point cloud (`panopticdepth serve`, `panopticdepth demo --serve`).

Standard library HTTP server + one static page; the 3D view uses three.js, vendored under
`static/vendor/three` (MIT), so the page needs no CDN and no network. Importing this package pulls
in no web framework; the core library never imports it.
"""

from .server import AppServer, make_server
from .service import InferenceService, UploadError

__all__ = ["AppServer", "InferenceService", "UploadError", "make_server"]
