"""The image archive: DICOM files on disk and everything that reads or writes them.

The core (``hub.services``) decides about studies over plain values and the
index; this package holds the file formats (pydicom, PIL, numpy) and does the
file work around those decisions: ``ingest`` stores a received instance,
``rewrite`` corrects stored headers after a (re)match, ``files`` writes
durably, ``dicomfile`` reads headers without decoding pixels, ``coercion``
puts corrected values into a data set, ``render`` turns an image into a
JPEG/PNG (or a placeholder saying why it cannot), ``thumbnails`` keeps the
summary page's previews, ``frames`` reads frames as stored and ``transcode``
re-encodes an instance for a client that cannot take its stored syntax.
The dependency points one way: hub.archive -> hub.services.
"""
