enum _PlaceholderCanopyCLI {}
