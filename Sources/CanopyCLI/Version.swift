/// The version `canopy --version` prints and `canopy serve` logs when it starts.
public enum CanopyVersion {
    /// The release this build is, or leads to (`-dev`).
    public static let current = "0.5.0-dev"
}
