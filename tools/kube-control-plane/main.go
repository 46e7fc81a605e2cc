// Command kube-control-plane is the Kubernetes control plane the legion-ci tests run against:
// the real kube-apiserver, kube-controller-manager and kube-scheduler, built from
// k8s.io/kubernetes as a library, plus an embedded etcd. One binary with subcommands, so the
// set-up compiles the shared code once and links once (the way hyperkube did).
//
//	kube-control-plane etcd --data-dir DIR --client-url http://127.0.0.1:PORT --peer-url http://127.0.0.1:PORT
//	kube-control-plane apiserver|controller-manager|scheduler [the component's own flags]
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
	_ "time/tzdata" // CronJob time zones, as the upstream main packages do

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = "usage: kube-control-plane etcd|apiserver|controller-manager|scheduler [flags]"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	switch name {
	case "etcd":
		os.Exit(runEtcd(args))
	case "apiserver", "controller-manager", "scheduler":
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	// The components parse os.Args[1:] through cobra; drop the subcommand's name first.
	os.Args = append([]string{"kube-" + name}, args...)
	switch name {
	case "apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	default:
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	}
}

// runEtcd serves a single-member etcd on the given loopback URLs until SIGTERM or SIGINT.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "etcd data directory")
	clientURL := fs.String("client-url", "", "client URL, e.g. http://127.0.0.1:2379")
	peerURL := fs.String("peer-url", "", "peer URL, e.g. http://127.0.0.1:2380")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || *clientURL == "" || *peerURL == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir, --client-url and --peer-url are required")
		return 2
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --client-url: %v\n", err)
		return 2
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --peer-url: %v\n", err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.Name = "legion-ci-test"
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "warn"
	// No metrics listener and no fsync per write: a throwaway test store, not a cluster's.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	fmt.Fprintln(os.Stderr, "etcd: ready on", cu.String())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}
