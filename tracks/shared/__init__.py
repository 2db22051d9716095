"""Code shared by several tracks (a track never imports another track): the quantised-EqProp track
body of tracks 4 / 16 / 19 (:mod:`.quantized`) and the training recipes (:mod:`.recipes`)."""
