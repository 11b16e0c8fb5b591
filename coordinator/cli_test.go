package main

import (
	"strings"
	"testing"
)

func TestPeersFlag(t *testing.T) {
	rf := raftFlags{nodeID: "b", raftAddr: "127.0.0.1:0", peers: "a=h1:1=h1:2, b=h2:1=h2:2,c=h3:1=h3:2"}
	nc, servers, err := rf.nodeConfig("r")
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 || nc.RaftAddr != "h2:1" || nc.HTTPAddr != "h2:2" || nc.DataDir != "runs/r/raft-b" || len(nc.Peers) != 3 {
		t.Errorf("node config %+v, servers %v", nc, servers)
	}
	for _, bad := range []string{"a=h1:1", "a=h1:1=h1:2,a=h2:1=h2:2", "x=h1:1=h1:2"} {
		rf.peers = bad
		if _, _, err := rf.nodeConfig("r"); err == nil {
			t.Errorf("--peers %q accepted", bad)
		} else if !strings.Contains(err.Error(), "peers") {
			t.Errorf("--peers %q: error %v does not name the flag", bad, err)
		}
	}
	single := raftFlags{nodeID: "coordinator-0", raftAddr: "127.0.0.1:0"}
	nc, servers, err = single.nodeConfig("r")
	if err != nil || len(servers) != 1 || strings.HasSuffix(nc.RaftAddr, ":0") || nc.DataDir != "runs/r/raft" {
		t.Errorf("single node: %+v %v %v", nc, servers, err)
	}
}
