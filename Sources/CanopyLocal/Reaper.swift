#if canImport(Glibc)
import Glibc
#endif
import CCanopySys
import Foundation
import Synchronization

/// Watches processes through pidfds on one epoll thread and calls back when each exits.
/// Works for the server's own children (which it also reaps) and for processes adopted after a restart.
final class Reaper: Sendable {
    struct Exit: Sendable {
        var pid: pid_t
        /// The wait status, for the server's own children; nil for adopted processes.
        var status: Int32?
    }

    private struct Watch {
        var pid: pid_t
        var isChild: Bool
        var onExit: @Sendable (Exit) -> Void
    }

    private let epollFD: Int32
    private let watches = Mutex<[Int32: Watch]>([:])

    init() {
        epollFD = canopy_epoll_create()
        let fd = epollFD
        let thread = Thread { [self] in self.loop(fd) }
        thread.name = "canopy-reaper"
        thread.start()
    }

    /// Watches `pid`; `onExit` runs on the reaper thread once it has exited. Returns false if it is already gone.
    @discardableResult
    func watch(pid: pid_t, isChild: Bool, onExit: @escaping @Sendable (Exit) -> Void) -> Bool {
        let pidfd = canopy_pidfd_open(pid)
        guard pidfd >= 0 else {
            if isChild {
                var status: Int32 = 0
                let r = waitpid(pid, &status, 0)
                onExit(Exit(pid: pid, status: r == pid ? status : nil))
                return true
            }
            return false
        }
        watches.withLock { $0[pidfd] = Watch(pid: pid, isChild: isChild, onExit: onExit) }
        canopy_epoll_add(epollFD, pidfd)
        return true
    }

    private func loop(_ epollFD: Int32) {
        var fds = [Int32](repeating: -1, count: 64)
        while true {
            let n = canopy_epoll_wait(epollFD, &fds, Int32(fds.count), -1)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            for i in 0..<Int(n) {
                let fd = fds[i]
                guard let watch = watches.withLock({ $0.removeValue(forKey: fd) }) else { continue }
                canopy_epoll_del(epollFD, fd)
                close(fd)
                var status: Int32?
                if watch.isChild {
                    var s: Int32 = 0
                    var r: pid_t
                    repeat { r = waitpid(watch.pid, &s, 0) } while r < 0 && errno == EINTR
                    if r == watch.pid { status = s }
                }
                watch.onExit(Exit(pid: watch.pid, status: status))
            }
        }
    }
}
