enum _PlaceholderCanopyApp {}
