"""The demo network's ports and Connections follow from the inventory alone."""

from stationflow.config import load_inventory
from stationflow.pools import port_pool, required_pools, station_pool
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.network import plan

INV = load_inventory(PROJECT_ROOT / "config" / "stations.yaml")


def test_every_connection_the_inventory_names_is_planned_once_on_its_own_port():
    p = plan(INV, base=20000)
    named = set()
    for st in INV.stations:
        named.add(st.upload.connection_id)
        for lg in st.loggers:
            named.add(getattr(lg.collect, "connection_id", None))
            named.add(lg.health_connection_id)
            named.add(lg.relay.connection_id if lg.relay else None)
    named.update(h.connection_id for net in INV.sensor_networks for h in net.harvest)
    named.update(t.connection_id for net in INV.sensor_networks for t in net.publish)
    named.discard(None)
    assert set(p.endpoints) == named
    # publish targets: their service root in the Connection's extra
    assert p.endpoints["sta_default"].extra == {"path": "/sensorthings/v1.1"}
    assert p.endpoints["sos_default"].extra == {"path": "/service"}
    ports = [e.port for e in p.endpoints.values() if e.port not in (p.push_port, p.portal_port)]
    modbus_health = {"fr_lam_serial_server", "fr_aur_profile"}  # reached on the Modbus port
    assert len(set(ports)) == len(ports) - len(modbus_health)
    assert all(20000 < port < 21000 for port in ports)
    assert p.endpoints["ftp_push_fr_lam"].port == p.push_port
    # one portal, one account per station: login = station id (the ETC rule)
    for st in INV.stations:
        ep = p.endpoints[st.upload.connection_id]
        assert (ep.port, ep.login, ep.schema) == (p.portal_port, st.id, "http")
    # a password is only ever generated for endpoints with an account, never planned here
    assert all(not hasattr(e, "password") for e in p.endpoints.values())


def test_the_plan_is_stable_across_calls():
    assert plan(INV, base=15000) == plan(INV, base=15000)


def test_pools_one_per_station_link_and_one_slot_per_modbus_port():
    pools = required_pools(INV)
    assert pools[station_pool("FR-Lam")][0] == 2
    assert pools[port_pool("modbus_fr_lam_soil")][0] == 1
    assert pools[port_pool("modbus_fr_aur_profile")][0] == 1
    assert station_pool("FR-Lam") == "link_fr_lam"
