"""The image archive: DICOM files on disk and everything that reads or writes them.

The core (``hub.services``) decides about studies over plain values and the
index; this package holds the file formats (pydicom, PIL, numpy) and does the
file work around those decisions: ``ingest`` stores a received instance,
``rewrite`` corrects stored headers after a (re)match, ``files`` writes
durably, ``dicomfile`` reads headers without decoding pixels, ``coercion``
puts corrected values into a data set, ``thumbnails`` renders previews.
The dependency points one way: hub.archive -> hub.services.
"""
