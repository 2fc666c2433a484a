{#- The masters of a saltext-raft cluster, declared (docs/states.md).

    Run on a master that stays in the cluster:
        salt-run state.orchestrate orch.raft_cluster pillar='{"raft_masters": {...}}'

    pillar:
      raft_masters   {id: "host:port of its raft port"}: the voters, added (as learners, then
                     promoted by the leader once caught up) if they are no members yet
      raft_retired   [id, ...]: masters to remove, after every declared voter is in place
      raft_leader    id (optional): the voter that should lead
-#}
{%- set masters = pillar.get("raft_masters", {}) %}
{%- set retired = pillar.get("raft_retired", []) %}
{%- set leader = pillar.get("raft_leader") %}

{%- for id, address in masters | dictsort %}
raft-member-{{ id }}:
  raft.member:
    - name: {{ id }}
    - address: {{ address }}
    - role: voter
{%- endfor %}

{%- for id in retired %}
raft-retired-{{ id }}:
  raft.absent:
    - name: {{ id }}
    {%- if masters %}
    - require:
      {%- for member in masters | sort %}
      - raft: raft-member-{{ member }}
      {%- endfor %}
    {%- endif %}
{%- endfor %}

{%- if leader %}
raft-leader:
  raft.leader:
    - name: {{ leader }}
    {%- if masters or retired %}
    - require:
      {%- for member in masters | sort %}
      - raft: raft-member-{{ member }}
      {%- endfor %}
      {%- for id in retired %}
      - raft: raft-retired-{{ id }}
      {%- endfor %}
    {%- endif %}
{%- endif %}
