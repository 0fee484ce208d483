// A small HTTP/1.1 endpoint serving GET /metrics in the Prometheus text
// format. prometheus-cpp's own Exposer (civetweb) cannot start its threads in
// a process that links LibTorch: civetweb asks for small thread stacks and
// LibTorch's static TLS does not fit in them ("Cannot create threads").
#ifndef GHOSTSERVE_SERVER_METRICS_HTTP_EXPORTER_H_
#define GHOSTSERVE_SERVER_METRICS_HTTP_EXPORTER_H_

#include <prometheus/collectable.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace ghostserve::metrics {

// Serves GET /metrics (all collectables, in order) and GET /healthz ("ok")
// on one thread it owns; other paths get 404, other methods 405. Requests are
// handled one at a time with a 2 s I/O timeout and an 8 KiB header limit, so
// a slow or hostile scraper cannot hold resources. Thread-safe to destroy
// from any thread; the destructor stops and joins.
class HttpExporter {
 public:
  // `bind` is HOST:PORT (port 0 picks one). Collectables are shared with the
  // caller and must stay valid while the exporter runs.
  static absl::StatusOr<std::unique_ptr<HttpExporter>> Start(
      const std::string& bind, std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~HttpExporter();

  int port() const { return port_; }

 private:
  HttpExporter() = default;
  void Loop();
  void Handle(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ghostserve::metrics

#endif  // GHOSTSERVE_SERVER_METRICS_HTTP_EXPORTER_H_
