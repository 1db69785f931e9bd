enum _PlaceholderTesting {}
