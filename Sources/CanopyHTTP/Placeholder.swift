enum _PlaceholderCanopyHTTP {}
